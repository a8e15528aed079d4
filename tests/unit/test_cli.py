"""The CLI is thin: it prints the config, and user errors are one line with exit status 2."""

import subprocess
import sys

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


def test_quickstart_help_quotes_the_tiny_presets_steps_and_the_budget_it_plans(capsys):
    """The --minutes help once quoted a 1,100-step default long after the preset changed: it now reads
    the preset, and says what --minutes does (a time budget the steps are planned from)."""
    import pytest

    from londinium.config import PRESETS

    with pytest.raises(SystemExit):
        main(["quickstart", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(tiny: {PRESETS['tiny']['train']['max_steps']:,})" in out
    assert "planned from the pace measured on this machine" in out and "1,100" not in out
