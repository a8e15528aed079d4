"""The CLI is thin: it prints the config, and user errors are one line with exit status 2."""

import os
import subprocess
import sys

import pytest

from londinium.cli import main


def test_config_show_prints_effective_values(capsys):
    assert main(["config", "show", "--preset", "tiny", "--set", "train.max_steps=42"]) == 0
    out = capsys.readouterr().out
    assert 'preset = "tiny"' in out and "max_steps = 42" in out


def test_user_error_is_one_line_without_traceback():
    r = subprocess.run(
        [sys.executable, "-m", "londinium", "config", "show", "--set", "train.nope=1"],
        capture_output=True, text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("londinium: error:") and "nope" in r.stderr


def test_a_closed_standard_output_is_no_traceback():
    """`londinium ... >&-`: Python starts with sys.stdout None; the command writes into /dev/null."""
    r = subprocess.run([sys.executable, "-m", "londinium", "config", "show"], stderr=subprocess.PIPE, text=True,
                       preexec_fn=lambda: (os.close(0), os.close(1)))
    assert r.returncode == 0 and r.stderr == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_full_standard_output_is_named_not_the_workspace():
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "londinium", "config", "show"], stdout=full, stderr=subprocess.PIPE, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("londinium: error: cannot write to standard output (No space left on device); "
                                "send it somewhere with room (or to /dev/null)")


@pytest.mark.parametrize("argv, flag", [
    (["export", "--out", "x\udcff.gguf", "--format", "gguf"], "--out"),
    (["search", "th\udcffou"], "the query"),
    (["config", "show", "--config", "\udcfe.toml"], "--config"),
    (["bench", "serve", "--base-url", "http://127.0.0.1:9/v1", "--name", "b\udcff"], "--name"),
    (["generate", "--prompt", "x", "--stop", "\udcff"], "--stop"),
])
def test_arguments_that_are_not_utf8_are_refused_before_any_work(tmp_path, capsys, argv, flag):
    """Bytes that are not UTF-8 in an argument (Python hands them over as lone surrogates) cannot go
    into the manifest or a JSON record: one line naming the argument and the byte, nothing written."""
    ws = tmp_path / "ws"
    assert main([*argv, "-w", str(ws)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"londinium: error: {flag} is not valid UTF-8 text (byte 0x") and err.count("\n") == 1
    assert not ws.exists()


def test_a_workspace_whose_name_is_not_utf8_is_refused(tmp_path, capsys):
    assert main(["config", "show", "-w", str(tmp_path / "w\udcff")]) == 2
    assert "--workspace is not valid UTF-8 text (byte 0xff" in capsys.readouterr().err


def test_quickstart_help_quotes_the_tiny_presets_steps_and_the_budget_it_plans(capsys):
    """The --minutes help once quoted a 1,100-step default long after the preset changed: it now reads
    the preset, and says what --minutes does (a time budget the steps are planned from)."""
    import pytest

    from londinium.config import PRESETS

    with pytest.raises(SystemExit):
        main(["quickstart", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(tiny: {PRESETS['tiny']['train']['max_steps']:,} pre-training, {PRESETS['tiny']['sft']['max_steps']:,} fine-tuning)" in out
    assert "planned from the pace measured on this machine" in out and "1,100" not in out
