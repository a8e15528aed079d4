"""`londinium generate` and `londinium chat` on a real workspace: the tokenizer stage's tokenizer and
a checkpoint written by the trainer's checkpoint code (random weights: what is tested is the
plumbing from flags to engine to output, not the prose)."""

from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest
import torch

from londinium.cli import main
from londinium.config import Config, ModelConfig, to_toml
from londinium.infer import Engine, SamplingParams
from londinium.infer.chat import ChatSession
from londinium.model.gpt import GPT
from londinium.tokenizer.codec import load_tokenizer, tokenizer_sha256
from londinium.checkpoint import save_checkpoint

# Tiny models are per-op overhead: one thread runs them faster, and leaves the other core free.
pytestmark = pytest.mark.usefixtures("one_thread")

RUN = "generate-cli"


@pytest.fixture(scope="module")
def ws(tiny_workspace):
    """The shared tiny workspace plus a checkpoint of a small random GPT under its own run name."""
    tok = load_tokenizer(tiny_workspace)
    cfg = Config()
    cfg.model = ModelConfig(n_layer=2, n_head=2, n_embd=32, context=64, vocab_size=tok.get_vocab_size())
    torch.manual_seed(0)
    model = GPT(cfg.model)
    save_checkpoint(tiny_workspace.checkpoints_dir(RUN), 1, model, {"step": 1}, to_toml(cfg),
                    {"run": RUN, "tokenizer_sha256": tokenizer_sha256(tiny_workspace)})
    return tiny_workspace


def cli(ws, *args: str) -> list[str]:
    return ["-w", str(ws.root), "--run", RUN, "--checkpoint", "latest", *args]


def test_generate_json_gives_text_tokens_logprobs_and_timing_equal_to_the_library(ws, capsys) -> None:
    assert main(["generate", *cli(ws, "--prompt", "Thou art", "--greedy", "--max-tokens", "6", "--ignore-eos",
                                  "--logprobs", "2", "--format", "json")]) == 0
    [line] = capsys.readouterr().out.strip().splitlines()
    row = json.loads(line)
    [choice] = row["choices"]
    assert len(choice["token_ids"]) == 6 and choice["finish_reason"] == "length"
    assert [len(e["top"]) for e in choice["logprobs"]] == [2] * 6
    assert row["timing"]["prompt_tokens"] == len(row["prompt_token_ids"]) and row["timing"]["completion_tokens"] == 6
    engine = Engine.from_workspace(ws, run=RUN, checkpoint="latest")
    [c] = engine.generate(["Thou art"], SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    assert choice["token_ids"] == c.token_ids and choice["text"] == c.text


@pytest.mark.parametrize("how", [["--weight-dtype", "int8"], ["--set", "generate.weight_dtype=int8"]])
def test_generate_with_int8_weights_gives_what_the_library_gives_on_them(ws, capsys, how: list[str]) -> None:
    from londinium.config import GenerateConfig

    assert main(["generate", *cli(ws, "--prompt", "Thou art", "--greedy", "--max-tokens", "6", "--ignore-eos",
                                  "--format", "json", *how)]) == 0
    [choice] = json.loads(capsys.readouterr().out)["choices"]
    engine = Engine.from_workspace(ws, run=RUN, checkpoint="latest", gen=GenerateConfig(weight_dtype="int8"))
    assert "int8 weights" in engine.loaded_from
    [c] = engine.generate(["Thou art"], SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    assert choice["token_ids"] == c.token_ids and choice["cumulative_logprob"] == c.choices[0].cumulative_logprob


def test_generate_with_an_int8_kv_cache_gives_what_the_library_gives_with_one(ws, capsys) -> None:
    from londinium.config import GenerateConfig

    assert main(["generate", *cli(ws, "--prompt", "Thou art", "--greedy", "--max-tokens", "20", "--ignore-eos",
                                  "--format", "json", "--set", "generate.kv_dtype=int8")]) == 0
    [choice] = json.loads(capsys.readouterr().out)["choices"]
    engine = Engine.from_workspace(ws, run=RUN, checkpoint="latest", gen=GenerateConfig(kv_dtype="int8"))
    assert engine.kv_dtype == "int8"
    [c] = engine.generate(["Thou art"], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True))
    assert choice["token_ids"] == c.token_ids and choice["cumulative_logprob"] == c.choices[0].cumulative_logprob


def test_prompts_file_with_n_samples_and_config_defaults(ws, tmp_path, capsys) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"Thou art"\n{"prompt": "To be, or not"}\n\n', encoding="utf-8")
    assert main(["generate", *cli(ws, "--prompts-file", str(prompts), "--n", "2", "--seed", "3", "--ignore-eos",
                                  "--format", "json", "--set", "generate.max_tokens=4")]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["prompt"] for r in rows] == ["Thou art", "To be, or not"]
    assert all(len(r["choices"]) == 2 and all(len(c["token_ids"]) == 4 for c in r["choices"]) for r in rows)


def test_generate_text_streams_the_prompt_and_its_continuation(ws, capsys) -> None:
    assert main(["generate", *cli(ws, "--prompt", "Thou art", "--max-tokens", "5", "--seed", "1", "--stop", "zzz")]) == 0
    out = capsys.readouterr()
    engine = Engine.from_workspace(ws, run=RUN, checkpoint="latest")
    [c] = engine.generate(["Thou art"], SamplingParams(max_tokens=5, seed=1, temperature=0.8, top_p=0.95, stop=["zzz"]))
    assert out.out == "Thou art" + c.text + "\n"
    assert RUN in out.err  # says what it loaded


@pytest.mark.parametrize("args, message", [
    (["--prompt", "Thou " * 80, "--max-tokens", "5"], "more than the model's context of 64 tokens"),
    (["--prompt", "x"], "max_tokens = 200 leaves no room for a prompt in the model's context of 64"),
    (["--prompt", "x", "--logit-bias", "nope"], "--logit-bias 'nope': expected TOKEN_ID=BIAS"),
    (["--prompt", "x", "--top-p", "0"], "top_p"),
    (["--prompt", "x", "--run", "nosuchrun"], "has no complete checkpoint"),
])
def test_generate_user_errors_are_one_line_naming_what_to_fix(ws, capsys, args: list[str], message: str) -> None:
    assert main(["generate", *cli(ws, *args)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after at most the line saying what was loaded
    assert err.startswith("londinium: error:") and message in err


def test_truncate_flag_lets_a_long_prompt_through(ws, capsys) -> None:
    assert main(["generate", *cli(ws, "--prompt", "Thou " * 80, "--max-tokens", "3", "--truncate", "--format", "json")]) == 0
    row = json.loads(capsys.readouterr().out)
    assert len(row["prompt_token_ids"]) == 64 - 3


def test_chat_repl_driven_through_stdin_sets_generates_resets_and_quits(ws) -> None:
    script = "/set temperature 0.7\n/set top_k banana\nThou art\n/show\n/reset\n/quit\nnever read\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "londinium", "chat", *cli(ws, "--max-tokens", "5", "--seed", "2")],
                       input=script, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("londinium chat: run generate-cli")
    assert "temperature = 0.7" in lines[1]
    assert lines[2].startswith("error: /set top_k banana: expected an integer")
    engine = Engine.from_workspace(ws, run=RUN, checkpoint="latest")
    [c] = engine.generate(["Thou art"], SamplingParams(max_tokens=5, seed=2, temperature=0.7, top_p=0.95))
    assert r.stdout.split(lines[2] + "\n", 1)[1].startswith(c.text + "\n")  # the continuation, streamed
    assert "temperature = 0.7" in r.stdout.split("(conversation reset)")[0].splitlines()[-1]  # /show
    assert r.stdout.rstrip().endswith("(conversation reset)")  # /quit left before "never read"


def test_chat_keeps_a_rolling_window_of_the_conversation(ws) -> None:
    engine = Engine.from_workspace(ws, run=RUN, checkpoint="latest")
    out = open(os.devnull, "w")
    session = ChatSession(engine, SamplingParams(max_tokens=8, seed=1, ignore_eos=True), window=40, out=out)
    first = None
    for turn in range(6):
        session.handle(f"Thou art number {turn} and more lovely")
        first = first or list(session.last_prompt)
        assert 0 < len(session.last_prompt) <= 40 - 8  # the window leaves room for max_tokens
    assert session.last_prompt[:len(first)] != first  # the oldest turn scrolled out
    session.handle("/reset")
    assert session.history == []


def test_a_checkpoint_trained_with_another_tokenizer_is_refused(ws, tmp_path) -> None:
    import shutil

    from londinium.errors import LondiniumError
    from londinium.workspace import Workspace

    other = Workspace(tmp_path / "other")
    shutil.copytree(ws.checkpoints_dir(RUN), other.checkpoints_dir(RUN))
    other.tokenizer_file.parent.mkdir(parents=True)
    # The same JSON plus a trailing newline: a different file (sha256), as a retrained tokenizer would be.
    other.tokenizer_file.write_text(ws.tokenizer_file.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    with pytest.raises(LondiniumError, match="trained with another tokenizer"):
        Engine.from_workspace(other, run=RUN, checkpoint="latest")


# ---- text from the user is UTF-8, checked before the tokenizer; errors leave stdout empty ----------


def _run_cli(*args: str, input_bytes: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "londinium", *args], input=input_bytes, capture_output=True, timeout=240, env=env)


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2 and "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("londinium: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_prompt_that_is_not_utf8_is_refused_naming_the_byte(ws) -> None:
    bad = b"Thou art \xff\xfe fair".decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes
    r = _run_cli("generate", *cli(ws, "--prompt", bad, "--max-tokens", "3"))
    assert "--prompt is not valid UTF-8 text (byte 0xff at character 9)" in _one_error_line(r)
    assert r.stdout == b""


@pytest.mark.parametrize("content, where", [
    (b"Thou art\nfair \xe9 and\n", ":2"),
    (b'{"prompt": "Thou art"}\n{"prompt": "lone \\udcff escape"}\n', ":2"),
])
def test_a_prompts_file_that_is_not_utf8_is_refused_naming_the_line(ws, tmp_path, content: bytes, where: str) -> None:
    f = tmp_path / ("p.jsonl" if content.startswith(b"{") else "p.txt")
    f.write_bytes(content)
    r = _run_cli("generate", *cli(ws, "--prompts-file", str(f), "--max-tokens", "3"))
    assert f"{f}{where} is not valid UTF-8 text" in _one_error_line(r)


def test_a_folder_given_as_the_prompts_file_is_named_as_such(ws, tmp_path) -> None:
    r = _run_cli("generate", *cli(ws, "--prompts-file", str(tmp_path), "--max-tokens", "3"))
    assert f"--prompts-file {tmp_path} is a directory" in _one_error_line(r)


def test_a_failing_generation_prints_nothing_of_the_prompt(ws) -> None:
    r = _run_cli("generate", *cli(ws, "--prompt", "Thou " * 80, "--max-tokens", "5"))
    assert "context" in _one_error_line(r)
    assert r.stdout == b""


def test_the_stop_token_range_is_printed_right(ws) -> None:
    r = _run_cli("generate", *cli(ws, "--prompt", "x", "--max-tokens", "3", "--stop-token-id", "-1"))
    line = _one_error_line(r)
    assert "token id -1 is not in the vocabulary" in line and "(0 .. -1)" not in line
    with pytest.raises(Exception, match=r"\(ids are >= 0\)"):
        SamplingParams(stop_token_ids=[-1]).validate()
    with pytest.raises(Exception, match=r"\(0 \.\. 511\)"):
        SamplingParams(stop_token_ids=[512]).validate(512)


def test_chat_skips_a_line_that_is_not_utf8_and_goes_on(ws) -> None:
    script = b"/set temperature 0\nbad \xff line\n/show\n/quit\n"
    r = _run_cli("chat", *cli(ws, "--max-tokens", "3", "--seed", "2"), input_bytes=script)
    out = r.stdout.decode("utf-8")
    assert r.returncode == 0 and "Traceback" not in r.stderr.decode(), r.stderr
    [line] = [line for line in out.splitlines() if line.startswith("error:")]
    assert line.startswith("error: input line 2 is not valid UTF-8 text (byte 0xff at byte 4)") and line.endswith("the line was skipped")
    assert "temperature = 0.0" in out.splitlines()[-1]  # /show still ran after the bad line


@pytest.mark.skipif(__import__("psutil").virtual_memory().available > 100 * 2**30,
                    reason="a million beams of this model (~110 GiB) would fit in this machine's memory")
def test_a_million_beams_are_refused_with_the_memory_they_need(ws) -> None:
    """Beam search's cache and logits grow with the beams: an absurd --beams is one line with the
    figures and the largest number that fits, not a process the kernel kills at 24 GB."""
    r = _run_cli("generate", *cli(ws, "--prompt", "Thou art", "--beams", "1000000", "--max-tokens", "60"))
    line = _one_error_line(r)
    assert "num_beams = 1,000,000 needs about" in line and "GiB is available" in line, line
    fit = int(line.rsplit("at most ", 1)[1].split()[0].replace(",", ""))
    assert 0 < fit < 1_000_000
    assert r.stdout == b""


def test_prompts_from_a_fifo_a_device_or_a_closed_stdin_are_refused_by_kind(ws, tmp_path) -> None:
    """Only a regular file is read: a FIFO would wait for a writer for ever, /dev/zero never ends
    (and both were once reported as "no such file")."""
    fifo = tmp_path / "prompts.fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "FIFO"), (Path("/dev/zero"), "character device")):
        r = _run_cli("generate", *cli(ws, "--prompts-file", str(path), "--max-tokens", "3"))
        assert f"--prompts-file {path} is a {kind}, not a regular file" in _one_error_line(r)


def test_chat_and_generate_with_standard_streams_closed(ws) -> None:
    """Started with stdin or stdout closed (`<&-`, `>&-`), a command finds them at /dev/null: chat
    reads an end of input and says goodbye, generate writes into nothing; no AttributeError."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    closed = {"chat": (0,), "generate": (1,)}
    for command, fds in closed.items():
        extra = ["--prompt", "Thou"] if command == "generate" else []
        r = subprocess.run([sys.executable, "-m", "londinium", command, *cli(ws, *extra, "--max-tokens", "3")],
                           stdout=subprocess.PIPE if 1 not in fds else None, stderr=subprocess.PIPE, timeout=240, env=env,
                           preexec_fn=lambda fds=fds: [os.close(fd) for fd in fds])
        assert r.returncode == 0 and b"Traceback" not in r.stderr, r.stderr.decode()


def test_the_server_loads_its_weights_as_generate_weight_dtype_says(ws) -> None:
    from londinium.config import load_config
    from londinium.model.quantize import Float16Linear
    from londinium.serve.server import run_loader

    cfg = load_config(None, ["generate.weight_dtype=float16", "serve.checkpoint=latest"])
    load, _, _ = run_loader(ws, cfg, RUN)
    engine = load()
    assert isinstance(engine.model.lm_head, Float16Linear) and "float16 weights" in engine.loaded_from
