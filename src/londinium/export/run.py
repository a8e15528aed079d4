"""`londinium export`: a checkpoint becomes a directory `transformers` loads (or a GGUF file for
llama.cpp), as a workspace stage.

    export_run(ws, cfg)                                  # exports/<run>-step-<N>/, float32
    export_run(ws, cfg, checkpoint="step-200", dtype="bfloat16", out="/tmp/mymodel")
    export_run(ws, cfg, fmt="gguf")                      # exports/<run>-step-<N>.gguf

The directory is built in a temporary directory beside the target and renamed into place whole,
so a half-written export never looks complete; a stale temporary directory from a killed export is
removed by the next one. The stage is recorded in the manifest (`export/<name>`), so exporting
the same checkpoint with the same settings again does nothing. What the target may be is the rule
of `outputs.check_target`: an existing target is replaced only when it is a londinium export
(`londinium.json` listing every file of the folder; a GGUF file whose metadata names londinium),
never a link, device, FIFO or socket, never the workspace, a stage's outputs, another export or the
checkpoint being exported, with or without `force` (which only re-runs an up-to-date export). A
lock beside the target (`.<name>.lock`) refuses a second export to it while one runs, whichever
workspace it comes from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from londinium.config import Config, ExportConfig, load_config
from londinium.errors import ConfigError, LondiniumError
from londinium.files import (create_temporary_dir, disk_full_guard, fsync_dir, remove_stale_temporaries, replace_dir,
                             sha256_file, share_as_umask)
from londinium.locks import hold
from londinium.outputs import absolute, check_target, holds_only, siblings
from londinium.workspace import Workspace

if TYPE_CHECKING:
    from londinium.checkpoint import Checkpoint

FORMATS = ("hf", "gguf")
GGUF_DTYPES = ("float32", "float16", "q8_0")
RECORD_FILE = "londinium.json"
CARD_FILE = "README.md"
_STEP = re.compile(r"^step-(\d+)$")


class ExportError(LondiniumError):
    """The export cannot be written: the target exists, is not writable, or the run is unknown."""


def resolve_settings(cfg: Config, run: str | None = None, checkpoint: str | None = None, fmt: str | None = None,
                     dtype: str | None = None, out: str | os.PathLike | None = None) -> ExportConfig:
    """The [export] section with the arguments given on top, checked; `run` resolved."""
    from londinium.export.hf import check_dtype

    e = dataclasses.replace(cfg.export, run=run or cfg.export.run or cfg.train.run_name,
                            checkpoint=checkpoint or cfg.export.checkpoint, format=fmt or cfg.export.format,
                            dtype=dtype or cfg.export.dtype, out=str(out) if out else cfg.export.out)
    if e.format not in FORMATS:
        raise ConfigError(f"export.format = {e.format!r}: use 'hf' (a transformers directory) or 'gguf' (--format)")
    if e.format == "hf":
        check_dtype(e.dtype)
    elif e.dtype not in GGUF_DTYPES:
        raise ConfigError(f"export.dtype = {e.dtype!r} is not a GGUF export dtype: use {', '.join(GGUF_DTYPES)} (--dtype)")
    return e


def resolve_checkpoint(ws: Workspace, run: str, which: str) -> Checkpoint:
    """The verified checkpoint `which` names: best, latest, step-N (that step of the run) or a directory."""
    from londinium.checkpoint import checkpoint_name, find_checkpoint, list_checkpoints  # torch: only once needed

    runs = ws.root / "runs"
    if not ws.run_dir(run).is_dir():
        known = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
        hint = f"runs in {runs}: {', '.join(known)}" if known else f"there are no runs in {runs}: train one first"
        raise ExportError(f"unknown run '{run}' ({hint}); choose one with --run")
    if m := _STEP.match(which):
        path = ws.checkpoints_dir(run) / checkpoint_name(int(m.group(1)))
        if not path.is_dir():
            steps = ", ".join(f"step-{c.step}" for c in list_checkpoints(ws.checkpoints_dir(run))) or "none"
            raise ExportError(f"run '{run}' has no checkpoint {which} (its checkpoints: {steps}); use --checkpoint best, latest or one of those")
        which = str(path)
    elif which not in ("best", "latest") and not Path(which).exists():
        raise ExportError(f"--checkpoint {which}: no such checkpoint; use best, latest, step-N or a checkpoint directory")
    return find_checkpoint(ws.checkpoints_dir(run), which, run)


def export_run(ws: Workspace, cfg: Config, run: str | None = None, checkpoint: str | None = None, fmt: str | None = None,
               dtype: str | None = None, out: str | os.PathLike | None = None, force: bool = False,
               log: Callable[[str], None] = print) -> Path:
    """Export a trained run's checkpoint; returns the path of the export (a directory for hf, a
    file for gguf). Skipped when the same checkpoint was exported with the same settings."""
    if out or cfg.export.out:  # a --out that may not be written is refused at once, before torch is loaded
        which = checkpoint or cfg.export.checkpoint
        given = absolute(which) if which not in ("best", "latest") and not _STEP.match(which) else None
        check_export_target(ws, absolute(out or cfg.export.out), fmt or cfg.export.format, given)
    from londinium.checkpoint import CONFIG_FILE

    e = resolve_settings(cfg, run, checkpoint, fmt, dtype, out)
    ckpt = resolve_checkpoint(ws, e.run, e.checkpoint)
    trained_cfg = load_config(ckpt.path / CONFIG_FILE)
    if e.format == "hf":
        from londinium.model.hf_layout import hf_layout

        hf_layout(trained_cfg.model)  # an unmappable model fails here, before anything is written
    target = absolute(e.out if e.out else ws.export_path(e.run, ckpt.step, e.format))
    e = dataclasses.replace(e, out=str(target))
    stage = f"export/{target.name}"
    inputs = [*(ckpt.path / name for name in ckpt.meta.get("files", {})), ws.tokenizer_file,
              ws.corpus_report_json, ws.eval_results(e.run)]
    from londinium.profiles import profile_for

    prompt = profile_for(ws).prompt_hint(ws)  # the card's and the printed command's example prompt
    fingerprint = {"checkpoint": str(ckpt.path), "generate": dataclasses.asdict(cfg.generate) if e.format == "hf" else None}
    check_export_target(ws, target, e.format, ckpt.path)  # before anything, even a lock file, is made

    def run_export() -> list[Path]:
        from londinium.model.load import load_run

        check_export_target(ws, target, e.format, ckpt.path)  # again, now that we hold the locks
        _writable_parent(target)
        trained = load_run(ws, e.run, str(ckpt.path), device="cpu")
        log(f"export: {trained.describe()} -> {target} ({e.format}, {e.dtype})")
        with disk_full_guard(target, hint="choose another --out"):
            if e.format == "gguf":
                from londinium.export.gguf import write_gguf

                write_gguf(target, trained, e.dtype)
                files = [target]
            else:
                files = _write_hf_export(ws, cfg, trained, e, target)
        log(_report(target, e.format, trained.num_params, files, prompt))
        return files

    _writable_parent(target)
    with hold(target.parent / f".{target.name}.lock", f"an export to {target}"):
        ran = ws.run_stage(stage, e, run_export, inputs=inputs, fingerprint=fingerprint, force=force, log=log,
                           config_file=ws.export_config_file(target))
    if not ran:
        log(f"  load it: {load_command(target, e.format, prompt)}")
    return target


def _write_hf_export(ws: Workspace, cfg: Config, trained: Any, e: ExportConfig, target: Path) -> list[Path]:
    from londinium.export.card import objective, provenance, render_card
    from londinium.export.hf import write_hf

    goal = objective(ws, trained)  # once: card and record say the same, and a base's files are verified once
    with _staging_dir(target) as tmp:
        written = write_hf(tmp, trained, e.dtype, cfg.generate, e.max_shard_mb)
        architecture = written["layout"].architecture
        (tmp / CARD_FILE).write_text(render_card(ws, trained, architecture, e.dtype, goal, target.name), encoding="utf-8")
        files = sorted(p.name for p in tmp.iterdir())
        record = provenance(ws, trained, {**dataclasses.asdict(e), "architecture": architecture,
                                          "files": {n: {"sha256": sha256_file(tmp / n), "bytes": (tmp / n).stat().st_size}
                                                    for n in files}}, goal)
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return sorted(target / n for n in [*files, RECORD_FILE])


# ---- the target --------------------------------------------------------------------------------


def check_export_target(ws: Workspace, target: Path, fmt: str, checkpoint: Path | None = None) -> Path:
    """`target` when an export may be written there (`outputs.check_target`); else a PathError
    naming --out and why."""
    keep = {**ws.stage_outputs(), **siblings(ws.exports_dir, target, [ws.export_config_file(target)]),
            **({checkpoint: "the checkpoint being exported"} if checkpoint else {})}
    return check_target(target, "--out", folder=fmt == "hf", ours=_own_gguf if fmt == "gguf" else _own_export,
                        keep=keep, within=ws.output_folders())


def _own_export(folder: Path) -> str | None:
    """None when `folder` is a londinium export: its londinium.json lists every file in it."""
    try:
        listed = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))["export"]["files"]
        names = [*listed, RECORD_FILE] if isinstance(listed, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        names = None
    if names is None:
        return f"is not a londinium export (no readable {RECORD_FILE} listing its files)"
    return holds_only(names)(folder)


def _own_gguf(path: Path) -> str | None:
    """None when `path` is a GGUF file londinium wrote (its general.name says so, see export/gguf.py)."""
    try:
        import gguf

        field = gguf.GGUFReader(path).fields["general.name"]
        name = bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception:  # not GGUF at all, truncated, or without a name: not ours in any case
        name = ""
    return None if name.startswith("londinium ") else "is not a GGUF file londinium wrote"


def _writable_parent(target: Path) -> None:
    blocker = next((p for p in target.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise ExportError(f"cannot write the export to {target}: {blocker} is a file, not a directory; choose another --out")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(target.parent, os.W_OK):
            raise PermissionError(13, "permission denied")
    except OSError as err:
        raise ExportError(f"cannot write the export to {target}: {err.strerror or err}; choose another --out") from None


@contextlib.contextmanager
def _staging_dir(target: Path) -> Iterator[Path]:
    """A temporary directory beside `target` (`.name.<pid>.<random>.tmp`, the umask's modes like a
    plain mkdir, since an export is for sharing), renamed onto it when the block succeeds and
    removed when it fails, so `target` is either the old export, the new one, or absent."""
    import shutil

    _writable_parent(target)
    remove_stale_temporaries(target.parent, name=target.name)  # left by an export that was killed
    try:
        tmp = create_temporary_dir(target)
    except OSError as err:
        raise ExportError(f"cannot write the export to {target}: {err.strerror or err}; choose another --out") from None
    try:
        yield tmp
        share_as_umask(tmp)  # safetensors writes 0600; an export is for sharing
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename


# ---- what is printed -------------------------------------------------------------------------


def load_command(target: Path, fmt: str, prompt: str) -> str:
    """One shell command that loads the export in the tool it is for and continues `prompt` (the
    corpus profile's `prompt_hint`: "Thou art" for period-london, held-out words for other corpora)."""
    if fmt == "gguf":
        return f"llama-cli -m {shlex.quote(str(target))} -p {shlex.quote(prompt)}"
    # json.dumps writes Python string literals; shlex.quote makes the whole program one shell word
    code = (f"from transformers import pipeline; print(pipeline('text-generation', model={json.dumps(str(target))})"
            f"({json.dumps(prompt)}, max_new_tokens=40)[0]['generated_text'])")
    return f"python -c {shlex.quote(code)}"


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _report(target: Path, fmt: str, params: int, files: list[Path], prompt: str) -> str:
    sizes = [(p, p.stat().st_size) for p in files]
    width = max(len(p.name) for p, _ in sizes)
    lines = [f"export: wrote {target} ({params:,} parameters)"]
    lines += [f"  {p.name:<{width}}  {_size(n):>9}" for p, n in sizes]
    lines += [f"  {'total':<{width}}  {_size(sum(n for _, n in sizes)):>9}", f"  load it: {load_command(target, fmt, prompt)}"]
    return "\n".join(lines)
