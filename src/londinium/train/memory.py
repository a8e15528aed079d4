"""Will training fit? The check before anything is allocated."""

from __future__ import annotations

import os
from typing import Any

import torch

from londinium.errors import ConfigError


def machine_memory(device: torch.device) -> int:
    """Bytes of memory on `device`: the GPU's total, or the machine's physical memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0  # unknown: no check


def check_memory(model: Any, batch_size: int, device: torch.device) -> None:
    """ConfigError before anything is allocated when training the model cannot fit in the device's
    memory at all (weights, gradients, AdamW state and activations, as `londinium model info` counts
    them): a config that loads must not turn into an allocation failure."""
    from londinium.model.info import memory_estimate

    need = memory_estimate(model, batch_size).training_total
    have = machine_memory(device)
    if have and need > have:
        raise ConfigError(
            f"training this model needs about {need / 2**30:,.1f} GiB (weights, gradients, AdamW state and activations of "
            f"train.batch_size = {batch_size} x model.context = {model.context}; `londinium model info` itemises it), "
            f"more than the {have / 2**30:,.1f} GiB of {device.type}; make model.n_layer, model.n_embd, model.context "
            f"or train.batch_size smaller")
