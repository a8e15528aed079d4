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
