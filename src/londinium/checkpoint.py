"""Checkpoints: one directory per step, written atomically, verified on load, never unpickled blindly.

    runs/<name>/checkpoints/step-000250/
        model.safetensors   the weights (safetensors: loading runs no code)
        trainer.pt          optimiser, scaler, step, every RNG state of every rank, data-loader cursors
                            (tensors and plain types only, read with torch.load(weights_only=True))
        config.toml         the full config the run used (model.vocab_size resolved)
        meta.json           written last: step, tokenizer hash, world size, and the sha256 and size of
                            every file above -- the completion marker
        eval.json           added after the evaluation that follows the save (not hashed; optional)

A checkpoint is built in `step-000250.tmp/` and renamed into place after every file and the directory
are fsynced, so a crash leaves a complete checkpoint or a `.tmp` directory that is ignored. On
resume the newest checkpoint whose files match their hashes wins; a damaged one is named, renamed
to `<name>.damaged` (kept for inspection, out of the way of the run) and the previous one is used.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from londinium.errors import LondiniumError
from londinium.files import disk_full_guard, fsync_dir, sha256_file, share_as_umask, write_json

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer.pt"
CONFIG_FILE = "config.toml"
META_FILE = "meta.json"
EVAL_FILE = "eval.json"
_NAME = re.compile(r"^step-(\d+)$")


class CheckpointError(LondiniumError):
    """A checkpoint is missing, truncated, corrupted, or does not fit the model being trained."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def eval(self) -> dict[str, Any] | None:
        p = self.path / EVAL_FILE
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @property
    def val_loss(self) -> float | None:
        e = self.eval
        return None if e is None else e.get("val_loss")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


# ---- RNG state -------------------------------------------------------------------------------------


def capture_rng() -> dict[str, Any]:
    """Every RNG a training step can draw from, as tensors and plain types (weights_only-safe)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
        # Only when CUDA is in use: querying initialises it, which costs seconds on a CPU-only run.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- writing ---------------------------------------------------------------------------------------


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    # The marker goes first: a removal cut short leaves a directory that no longer looks complete.
    (path / META_FILE).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(
    directory: Path,
    step: int,
    model: torch.nn.Module,
    trainer_state: dict[str, Any],
    config_toml: str,
    meta: dict[str, Any],
) -> Checkpoint:
    """Write checkpoint `step` into `directory` atomically and return it.

    `model` is the bare module (not DDP or compiled wrappers); `trainer_state` holds tensors and plain
    types only. If a complete checkpoint of this step exists it is kept: a resumed run that stops at
    the step it resumed from has nothing new to say.
    """
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    final = directory / checkpoint_name(step)
    if final.is_dir():
        try:
            return verify(final)
        except CheckpointError:
            _remove_tree(final)
    tmp = directory / (checkpoint_name(step) + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    with disk_full_guard(final, hint="choose another --workspace"):
        try:
            # save_model drops the duplicate names of tied weights (wte / lm_head) that save_file refuses.
            save_model(model, str(tmp / MODEL_FILE), metadata={"format": "pt", "step": str(step)})
            with open(tmp / STATE_FILE, "wb") as f:  # a file object: torch then keeps the OSError (a full disk) as context
                torch.save(trainer_state, f)
            (tmp / CONFIG_FILE).write_text(config_toml, encoding="utf-8")
            files = {}
            for name in (MODEL_FILE, STATE_FILE, CONFIG_FILE):
                _fsync_file(tmp / name)
                files[name] = {"sha256": sha256_file(tmp / name), "bytes": (tmp / name).stat().st_size}
            full_meta = {"format": FORMAT_VERSION, "step": step, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta, "files": files}
            write_json(tmp / META_FILE, full_meta)
            share_as_umask(tmp)  # safetensors writes 0600: the umask decides, as for any artifact
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # at once: on a full disk the next step needs the space
            raise
    fsync_dir(tmp)
    os.rename(tmp, final)
    fsync_dir(directory)
    return Checkpoint(final, step, full_meta)


def write_eval(ckpt: Checkpoint, metrics: dict[str, Any]) -> None:
    """Attach evaluation results (val_loss decides the best checkpoint) to a saved checkpoint."""
    write_json(ckpt.path / EVAL_FILE, metrics)


# ---- finding and verifying -------------------------------------------------------------------------


def list_checkpoints(directory: Path) -> list[Checkpoint]:
    """Checkpoint directories that carry a completion marker, oldest first (not hash-verified)."""
    found = []
    if not directory.is_dir():
        return found
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / META_FILE).is_file():
            found.append(Checkpoint(p, int(m.group(1))))
    return sorted(found, key=lambda c: c.step)


def verify(path: Path) -> Checkpoint:
    """Check that every file of the checkpoint at `path` is present with its recorded size and hash."""
    m = _NAME.match(path.name)
    if not m or not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory (expected runs/<run>/checkpoints/step-NNNNNN)")
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is incomplete: {META_FILE} is missing (the save was cut short)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: {META_FILE} is unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or not isinstance(meta.get("files"), dict):
        raise CheckpointError(f"checkpoint {path}: {META_FILE} is not a londinium checkpoint of format {FORMAT_VERSION}")
    for name, want in meta["files"].items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path}: {name} is missing")
        size = f.stat().st_size
        if size != want.get("bytes"):
            raise CheckpointError(f"checkpoint {path}: {name} is truncated or altered ({size} bytes, expected {want.get('bytes')})")
        if sha256_file(f) != want.get("sha256"):
            raise CheckpointError(f"checkpoint {path}: {name} is corrupted (sha256 does not match {META_FILE})")
    return Checkpoint(path, int(m.group(1)), meta)


def latest_valid(directory: Path, log: Callable[[str], None] = print, quarantine: bool = True) -> Checkpoint | None:
    """The newest checkpoint that verifies. Damaged ones are reported and, with `quarantine`, renamed
    to `<name>.damaged` so that the resumed run can write that step again."""
    candidates = [p for p in directory.iterdir() if _NAME.match(p.name) and p.is_dir()] if directory.is_dir() else []
    for path in sorted(candidates, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True):
        try:
            return verify(path)
        except CheckpointError as e:
            if quarantine:
                target = path.with_name(path.name + ".damaged")
                if target.exists():
                    shutil.rmtree(target)
                os.rename(path, target)
                log(f"warning: {e}; moved it to {target.name} and using the previous checkpoint")
            else:
                log(f"warning: {e}; skipping it")
    return None


def best_checkpoint(directory: Path) -> Checkpoint | None:
    """The complete checkpoint with the lowest validation loss (None when none was evaluated)."""
    scored = [(c.val_loss, c.step, c) for c in list_checkpoints(directory) if c.val_loss is not None]
    return min(scored, key=lambda t: (t[0], -t[1]))[2] if scored else None


def prune(directory: Path, keep_last: int) -> list[Path]:
    """Remove all but the newest `keep_last` checkpoints and the best one; also stale `.tmp` dirs.
    Only rank 0 calls this, between saves, so no `.tmp` directory is in progress."""
    ckpts = list_checkpoints(directory)
    keep = {c.path for c in ckpts[-max(1, keep_last):]}
    best = best_checkpoint(directory)
    if best is not None:
        keep.add(best.path)
    removed = []
    for c in ckpts:
        if c.path not in keep:
            _remove_tree(c.path)
            removed.append(c.path)
    for p in directory.glob("step-*.tmp"):
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


# ---- reading ---------------------------------------------------------------------------------------


def load_trainer_state(ckpt: Checkpoint) -> dict[str, Any]:
    """The optimiser/RNG/loader state; weights_only refuses anything but tensors and plain types."""
    try:
        return torch.load(ckpt.path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # an unpickling refusal or a torn zip: the same advice either way
        raise CheckpointError(f"checkpoint {ckpt.path}: {STATE_FILE} cannot be read safely ({e})") from None


def load_weights(model: torch.nn.Module, ckpt: Checkpoint, device: torch.device | str = "cpu") -> None:
    """Load the checkpoint's weights into `model` (the bare module); every name must match."""
    from safetensors.torch import load_model as st_load_model

    try:
        missing, unexpected = st_load_model(model, str(ckpt.path / MODEL_FILE), strict=False, device=str(device))
    except Exception as e:
        raise CheckpointError(f"checkpoint {ckpt.path}: {MODEL_FILE} does not fit this model ({e})") from None
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt.path}: weights do not fit this model (missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}); the model config differs from the one the run was trained with")


def find_checkpoint(directory: Path, which: str = "best", run: str = "main") -> Checkpoint:
    """The verified checkpoint `which` names: "best" (lowest validation loss, falling back to the
    newest), "latest", or a path to a checkpoint directory. Damaged ones are skipped, not moved."""
    if which not in ("best", "latest"):
        return verify(Path(which))
    ckpt = best_checkpoint(directory) if which == "best" else None
    ckpt = verify(ckpt.path) if ckpt is not None else latest_valid(directory, quarantine=False)
    if ckpt is None:
        damaged = sorted((p for p in directory.glob("step-*") if _NAME.match(p.name) and p.is_dir()),
                         key=lambda p: int(_NAME.match(p.name).group(1))) if directory.is_dir() else []
        if damaged:  # say what is wrong with the newest one rather than "train it first"
            try:
                verify(damaged[-1])
            except CheckpointError as e:
                raise CheckpointError(f"run '{run}' has no intact checkpoint: {e}; retrain, or restore it from a copy") from None
        raise CheckpointError(f"run '{run}' has no complete checkpoint in {directory}; train it first (londinium train --run {run})")
    return ckpt
