"""One way to load a trained model for use: `load_run` (generation, evaluation, export, serving).

    trained = load_run(ws, run="main", checkpoint="best", device="cpu")
    trained.model, trained.tokenizer, trained.config, trained.checkpoint

The model is rebuilt from the config stored in the checkpoint, so it is exactly what was trained
whatever `londinium.toml` says now; the workspace tokenizer is checked once, here, against the hash
the checkpoint recorded, so no consumer can pair a model with the wrong vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from londinium.checkpoint import CONFIG_FILE, Checkpoint, CheckpointError, find_checkpoint, load_weights
from londinium.config import Config
from londinium.workspace import Workspace


@dataclass
class TrainedModel:
    """A trained GPT in eval mode with its tokenizer, the config it was trained with and its checkpoint."""

    model: Any  # londinium.model.gpt.GPT
    tokenizer: Any  # tokenizers.Tokenizer, special tokens in text kept as text
    config: Config
    checkpoint: Checkpoint
    run: str
    device: torch.device
    tokenizer_sha256: str

    @property
    def num_params(self) -> int:
        """The architecture's parameters (whatever form the weights are held in: `model/quantize.py`)."""
        from londinium.model.info import param_counts

        return param_counts(self.model.config).total

    def describe(self) -> str:
        """One line for logs: which run, checkpoint, size, weights and device."""
        dtype = getattr(self.model, "weight_dtype", "float32")
        weights = "" if dtype == "float32" else f", {dtype} weights"
        return f"run {self.run}, checkpoint {self.checkpoint.path.name} ({self.num_params:,} parameters{weights}) on {self.device}"


def load_run(ws: Workspace, run: str = "main", checkpoint: str = "best", device: str | torch.device = "cpu",
             device_setting: str = "device") -> TrainedModel:
    """Load run `run`'s checkpoint ("best", "latest" or a checkpoint directory) onto `device` ("auto",
    "cpu", "cuda", ...), with the workspace tokenizer it was trained with.

    `device_setting` names the setting the device came from (`generate.device`, `--device`) so a bad
    value is reported under the name the user wrote."""
    from londinium.config import load_config
    from londinium.device import resolve_device
    from londinium.model.gpt import GPT
    from londinium.tokenizer.codec import load_tokenizer, tokenizer_sha256

    dev = device if isinstance(device, torch.device) else resolve_device(device, setting=device_setting)
    ckpt = find_checkpoint(ws.checkpoints_dir(run), checkpoint, run)
    tok_sha = tokenizer_sha256(ws)
    trained_with = ckpt.meta.get("tokenizer_sha256")
    if trained_with and trained_with != tok_sha:
        raise CheckpointError(
            f"checkpoint {ckpt.path} was trained with another tokenizer than {ws.tokenizer_file} (sha256 differs); "
            "use it in the workspace the run was trained in, or retrain")
    cfg = load_config(ckpt.path / CONFIG_FILE)
    model = GPT(cfg.model)
    load_weights(model, ckpt, dev)
    model.to(dev).eval()
    return TrainedModel(model, load_tokenizer(ws), cfg, ckpt, run, dev, tok_sha)


def serve_context(model: Any, context: int, scaling: str = "ntk") -> str | None:
    """Give `model` (a GPT, before an engine is built on it) `context` positions, 0 leaving it as
    trained; returns the warning to show when they go past what it was trained at, else None.
    A model with learned positions refuses with one line (ConfigError naming serve.context)."""
    from londinium.model.gpt import ntk_base_factor

    if not context or context == model.config.context:
        return None
    model.extend_context(context, scaling)
    trained = model.trained_context
    if context <= trained:
        return None
    head_dim = model.config.n_embd // model.config.n_head
    how = {"none": "extrapolated", "linear": f"every position / {context / trained:g}",
           "ntk": f"rotary base x {ntk_base_factor(head_dim, context / trained):.4g}"}
    return (f"serving a context of {context} tokens, past the {trained} this model was trained at: positions "
            f"{trained}-{context - 1} were never trained (rope_scaling {scaling}: {how[scaling]}); expect its text to "
            f"worsen as a prompt grows past {trained} tokens")
