"""The reports a server shows: a fixed allow-list of workspace files, never a path from the request.

A request names a report (`report-card`) and, for a plot, a file name. What is read is found here
from the workspace's layout: the report's Markdown, and the PNG files that Markdown links by a bare
name (`![loss](loss.png)`) in its own folder. Nothing else is reachable, whatever the request spells
(`..`, `/`, `%2F`, a link): any other name is a 404. A file that is a symbolic link is not served
either, so a link planted in the workspace cannot point the server at another file.

Which run the reports belong to is the served model's `Provenance`: a workspace run (its report
card, training curve, the model card of its newest export, and the workspace's data card and
tokenizer report), or an export directory (its own model card only: the workspace the server was
started in need not be the one the export came from).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from londinium.files import path_kind
from londinium.workspace import Workspace

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.png")

# name -> (title, what makes it when it is missing)
REPORTS: dict[str, tuple[str, str]] = {
    "model-card": ("Model card", "londinium export --run {run}"),
    "report-card": ("Report card", "londinium eval --run {run}"),
    "training": ("Training curve", "londinium train --run {run}"),
    "data-card": ("Data card", "londinium corpus build"),
    "tokenizer": ("Tokenizer report", "londinium tokenizer train"),
}


@dataclass(frozen=True)
class Provenance:
    """Where the served model comes from: what its details and reports are read from."""

    workspace: Workspace | None = None
    run: str = ""
    checkpoint: str = ""
    step: int | None = None
    tokens_seen: int | None = None
    val_loss: float | None = None
    export: Path | None = None

    @classmethod
    def of_checkpoint(cls, ws: Workspace, run: str, checkpoint: object) -> Provenance:
        """A run's checkpoint (`checkpoint.Checkpoint`) as found by `find_checkpoint`."""
        meta = getattr(checkpoint, "meta", {}) or {}
        return cls(ws, run, checkpoint.path.name, checkpoint.step, meta.get("tokens_seen"),  # type: ignore[attr-defined]
                   getattr(checkpoint, "val_loss", None))

    @classmethod
    def of_export(cls, ws: Workspace, directory: Path) -> Provenance:
        """An export directory, from the provenance (`londinium.json`) the export wrote; the workspace
        is kept for its search index only."""
        try:
            info = json.loads((directory / "londinium.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        info = info if isinstance(info, dict) else {}
        checkpoint = info.get("checkpoint") if isinstance(info.get("checkpoint"), dict) else {}
        step = info.get("step") if isinstance(info.get("step"), int) else None
        return cls(ws, str(info.get("run") or ""), Path(str(checkpoint.get("path") or "")).name, step,
                   checkpoint.get("tokens_seen") if isinstance(checkpoint.get("tokens_seen"), int) else None,
                   export=directory)


@dataclass(frozen=True)
class Report:
    """One report: its Markdown (a file, or `generated` text) and the folder its plots are in."""

    name: str
    title: str
    folder: Path
    markdown: Path | None = None
    generated: str = ""

    def text(self) -> str:
        return self.markdown.read_text(encoding="utf-8", errors="replace") if self.markdown else self.generated

    def image(self, file: str) -> Path | None:
        """The plot `file` when the report links it by a bare name and it is a regular file beside it."""
        if not IMAGE_NAME.fullmatch(file) or file not in IMAGE_LINK.findall(self.text()):
            return None
        path = self.folder / file
        return path if path_kind(path) == "file" else None


def _file(path: Path | None) -> Path | None:
    return path if path is not None and path_kind(path) == "file" else None


def find_report(p: Provenance, name: str) -> Report | None:
    """The report `name` of what is served, if it exists (regular files only)."""
    if name not in REPORTS:
        return None
    title = REPORTS[name][0]
    if p.export is not None:
        card = _file(p.export / "README.md") if name == "model-card" else None
        return Report(name, title, p.export, card) if card else None
    ws = p.workspace
    if ws is None:
        return None
    if name == "training":
        plot = ws.loss_plot(p.run)
        if not _file(plot):
            return None
        return Report(name, title, plot.parent, generated=f"# Training curve: run `{p.run}`\n\n"
                                                             f"![Training and validation loss]({plot.name})\n")
    path = _file({"model-card": ws.model_card(p.run) if p.run else None,
                  "report-card": ws.eval_report_md(p.run) if p.run else None,
                  "data-card": ws.corpus_report_md, "tokenizer": ws.tokenizer_report_md}[name])
    return Report(name, title, path.parent, path) if path else None


def missing_hint(p: Provenance, name: str) -> str:
    """What to run to make a missing report."""
    if p.export is not None:
        return "an export directory carries its model card only"
    return f"run `{REPORTS[name][1].format(run=p.run or 'RUN')}`"


def report_list(p: Provenance) -> list[dict[str, object]]:
    """Every report name with its title and whether this server has it (and if not, what makes it)."""
    out: list[dict[str, object]] = []
    for name, (title, _) in REPORTS.items():
        available = find_report(p, name) is not None
        out.append({"name": name, "title": title, "available": available,
                    "hint": None if available else missing_hint(p, name)})
    return out
