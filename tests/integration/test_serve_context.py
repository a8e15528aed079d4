"""`londinium serve --context N` (and `generate --context N`): a rotary model served past its trained
context takes prompts that long, says so on standard error, and a model with learned positions
refuses in one line before the port opens. Real processes on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from serve_helpers import free_port, rope_run, serve_process, slow_run, stop, wait_healthy
from train_helpers import cli_in_process

def _prompt(lines: int) -> str:
    """~9 tokens a line in the tiny workspace's 512-token vocabulary."""
    return " ".join(["the king hath gone to the sea"] * lines)


def test_serve_runs_a_rotary_model_past_its_trained_context_with_a_warning(tiny_workspace) -> None:
    port = free_port()
    proc = serve_process(tiny_workspace, rope_run(tiny_workspace), port, "--context", "256")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, timeout=120)
        long = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": _prompt(14), "max_tokens": 8,
                                                         "temperature": 0}, timeout=60)
        assert long.status_code == 200, long.text
        assert 64 < long.json()["usage"]["prompt_tokens"] and long.json()["usage"]["completion_tokens"] > 0
        assert httpx.get(f"{url}/v1/londinium/model", timeout=30).json()["context"] == 256
        too_long = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": _prompt(40), "max_tokens": 8},
                              timeout=60)
        assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "context_length_exceeded"
        assert "256 tokens" in too_long.json()["error"]["message"]
    finally:
        stop(proc)
    said = proc.stdout.read()
    assert "warning: serving a context of 256 tokens, past the 64 this model was trained at" in said
    assert "positions 64-255 were never trained (rope_scaling ntk" in said


def test_serve_refuses_a_longer_context_for_learned_positions_before_the_port_opens(tiny_workspace) -> None:
    run = slow_run(tiny_workspace)  # GPT-2 style: learned positions, context 512
    done = subprocess.run([sys.executable, "-m", "londinium", "serve", "-w", str(tiny_workspace.root), "--run", run,
                           "--port", str(free_port()), "--context", "1024"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "serve.context = 1024: this model has learned positions" in lines[0]
    assert "trained context of 512" in lines[0] and "londinium serve: http" not in done.stderr


@pytest.mark.usefixtures("one_thread")
def test_generate_takes_the_same_context_option(tiny_workspace) -> None:
    run = rope_run(tiny_workspace)
    args = ["generate", "-w", str(tiny_workspace.root), "--run", run, "--checkpoint", "latest", "--greedy",
            "--max-tokens", "4", "--prompt", _prompt(12)]
    rc, out, err = cli_in_process(args)
    assert rc == 2 and "context of 64" in err  # ~108 tokens do not fit 64
    rc, out, err = cli_in_process([*args, "--context", "192"])
    assert rc == 0, err
    assert "past the 64 this model was trained at" in err


@pytest.mark.usefixtures("one_thread")
def test_an_export_served_past_its_context_gives_the_runs_logits(tiny_workspace, tmp_path) -> None:
    """`serve --export DIR --context N` and `serve --run RUN --context N` load the same model: the
    export keeps the trained context, and the serve-time tables are built the same way on both."""
    import torch

    from londinium.config import Config, ServeConfig
    from londinium.export.run import export_run
    from londinium.model.load import load_run
    from londinium.serve.server import _serve_context, export_loader

    run = rope_run(tiny_workspace)
    out = tmp_path / "rope-hf"
    export_run(tiny_workspace, Config(), run=run, checkpoint="latest", fmt="hf", out=out, log=lambda m: None)
    s = ServeConfig(context=200)
    engine = export_loader(out, "cpu", None, None, s)[0]()
    trained = load_run(tiny_workspace, run=run, checkpoint="latest")
    _serve_context(trained.model, s)
    assert engine.context == trained.model.config.context == 200
    x = torch.randint(0, trained.tokenizer.get_vocab_size(), (1, 180))
    with torch.no_grad():
        torch.testing.assert_close(engine.model(x)[0], trained.model(x)[0], atol=1e-5, rtol=0)
