"""The optimiser of a training run: AdamW, or Muon for the hidden matrices with AdamW for the rest.

Muon (Jordan et al. 2024, the optimiser of the modded-nanogpt speedruns) orthogonalises the
momentum of each 2-D weight matrix inside the transformer blocks by Newton-Schulz iterations; the
embeddings, the output head, the norms' gains and the biases stay on AdamW, as in its reference
recipe. `torch.optim.Muon` (torch >= 2.9) does the work; its update is scaled by
sqrt(max(1, rows / cols)) ("original", Keller Jordan's scaling), so `train.muon_lr` is on the
reference recipe's scale (~0.02), not AdamW's.

Every parameter group records its peak learning rate (`peak_lr`); the schedule multiplies all of
them by the same factor each step (`set_lr`), so one schedule drives both optimisers.
"""

from __future__ import annotations

from typing import Any

import torch

from londinium.config import TrainConfig


class Optimizers:
    """One or two torch optimisers stepped together: what the trainer holds and checkpoints."""

    def __init__(self, parts: dict[str, torch.optim.Optimizer]) -> None:
        self.parts = parts

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.parts.values() for g in opt.param_groups]

    def set_lr(self, factor: float) -> None:
        """Every group at `factor` times its peak learning rate."""
        for group in self.param_groups:
            group["lr"] = group["peak_lr"] * factor

    def step(self, scaler: torch.amp.GradScaler | None = None) -> None:
        for opt in self.parts.values():
            scaler.step(opt) if scaler is not None else opt.step()

    def unscale_(self, scaler: torch.amp.GradScaler) -> None:
        for opt in self.parts.values():
            scaler.unscale_(opt)

    def zero_grad(self) -> None:
        for opt in self.parts.values():
            opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        # An AdamW-only run saves AdamW's own state dict, as checkpoints always have.
        if list(self.parts) == ["adamw"]:
            return self.parts["adamw"].state_dict()
        return {name: opt.state_dict() for name, opt in self.parts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The peaks come from this run's config (a resumed run may change train.learning_rate on
        # purpose, and checkpoints from before Muon have none), not from the saved groups.
        peaks = [g["peak_lr"] for g in self.param_groups]
        if list(self.parts) == ["adamw"]:
            self.parts["adamw"].load_state_dict(state)
        else:
            for name, opt in self.parts.items():
                opt.load_state_dict(state[name])
        for group, peak in zip(self.param_groups, peaks, strict=True):
            group["peak_lr"] = peak


def hidden_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The 2-D weights inside the transformer blocks (attention, MLP, experts, router): Muon's share."""
    return [p for name, p in model.named_parameters()
            if p.requires_grad and p.dim() == 2 and name.startswith("transformer.h.")]


def build_optimizers(model: torch.nn.Module, tc: TrainConfig, device: torch.device) -> Optimizers:
    # Fused AdamW (one kernel for all parameters) where this torch has it, else the foreach path.
    fast = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    parts: dict[str, torch.optim.Optimizer] = {}
    muon_ids: set[int] = set()
    if tc.optimizer == "muon":
        matrices = hidden_matrices(model)
        muon_ids = {id(p) for p in matrices}
        parts["muon"] = torch.optim.Muon(matrices, lr=tc.muon_lr, weight_decay=tc.weight_decay,
                                         momentum=tc.muon_momentum, nesterov=True, adjust_lr_fn="original")
    groups = [{**g, "params": [p for p in g["params"] if id(p) not in muon_ids]} for g in model.optimizer_groups(tc.weight_decay)]
    parts["adamw"] = torch.optim.AdamW(groups, lr=tc.learning_rate,
                                       betas=(tc.beta1, tc.beta2), **fast)
    opts = Optimizers(parts)
    for group in opts.param_groups:
        group["peak_lr"] = group["lr"]
    return opts
