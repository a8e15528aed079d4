"""Shared pieces of the tool-calling and agent tests: the MCP test workspace plus an untrained model
with a long context (tool signatures and smolagents' system prompt take thousands of tokens of the
tiny 512-token vocabulary), served as a real `londinium serve` process."""

from __future__ import annotations

import sys

from londinium.workspace import Workspace

from tests.integration.mcp_helpers import server_args

UNTRAINED = "untrained-long"


def untrained_run(ws: Workspace, context: int = 8192) -> str:
    """A random-weight GPT (2 layers, 64 wide) saved as a checkpoint of `ws`: nothing it writes is
    learnt, so whatever shape its tool calls have comes from the grammar alone."""
    import torch

    from londinium.checkpoint import save_checkpoint
    from londinium.config import Config, ModelConfig, to_toml
    from londinium.model.gpt import GPT
    from londinium.tokenizer.codec import load_tokenizer, tokenizer_sha256

    if not ws.checkpoints_dir(UNTRAINED).is_dir():
        cfg = Config()
        cfg.model = ModelConfig(n_layer=2, n_head=2, n_embd=64, context=context, vocab_size=load_tokenizer(ws).get_vocab_size())
        torch.manual_seed(0)
        save_checkpoint(ws.checkpoints_dir(UNTRAINED), 1, GPT(cfg.model), {"step": 1}, to_toml(cfg),
                        {"run": UNTRAINED, "tokenizer_sha256": tokenizer_sha256(ws)})
    return UNTRAINED


def mcp_command(ws: Workspace) -> str:
    """`londinium mcp` on the test workspace as one command line (the agent's --mcp)."""
    import shlex

    return shlex.join([sys.executable, *server_args(ws)])


QUICKSTART_SHAPED = "quickstart-shaped"


def quickstart_shaped_run(ws: Workspace, steps: int = 30) -> str:
    """The quickstart's model in shape (the tiny preset: 2 x 128, rotary positions, a 256-token context),
    trained a few steps on the workspace: what `make quickstart` leaves, short of its hour of training.
    Served past its context with `londinium serve --context N`, as a user does after the quickstart."""
    from tests.integration.train_helpers import cli_in_process

    if not ws.checkpoints_dir(QUICKSTART_SHAPED).is_dir():
        rc, _, err = cli_in_process(["train", "-w", str(ws.root), "--run", QUICKSTART_SHAPED, "--preset", "tiny",
                                     *(x for s in (f"train.max_steps={steps}", "train.warmup_steps=3", f"train.eval_every={steps}",
                                                   "train.eval_batches=2", "train.threads=1") for x in ("--set", s))])
        assert rc == 0, err
    return QUICKSTART_SHAPED
