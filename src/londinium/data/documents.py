"""Reading the corpus's JSONL splits: one document per line, `{"id", "text", "source", ...}`.

The tokenizer and the shard encoder both stream documents from here, so a malformed line gets the
same clear error (file, line, what to do) wherever it is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from londinium.errors import LondiniumError
from londinium.files import loads_json
from londinium.workspace import Workspace


def require_split(ws: Workspace, split: str) -> Path:
    """Path of a corpus split the corpus stage recorded, or a clear error saying which stage to run."""
    path = ws.corpus_split(split)
    ws.require_stage("corpus", [path])  # only the splits the last finished build recorded
    return path


def iter_documents_sized(path: str | Path) -> Iterator[tuple[dict, int]]:
    """Yield (row, bytes of its line) for each row of a corpus JSONL file (sizes drive progress bars).

    A line that is not JSON, or a row without a string `text`, is an error naming the file and line.
    """
    path = Path(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                row = loads_json(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise LondiniumError(f"{path}:{n}: not valid JSON ({e}); rebuild the corpus with `londinium corpus build --force`") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise LondiniumError(f"{path}:{n}: a corpus row needs a string field 'text'; rebuild the corpus with `londinium corpus build --force`")
            try:
                row["text"].encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate escape such as "\\ud800" is not text
                raise LondiniumError(f"{path}:{n}: 'text' holds an unpaired surrogate (\\ud800-\\udfff), which is not valid Unicode text; fix or drop that document") from None
            yield row, len(raw)


def iter_documents(path: str | Path) -> Iterator[dict]:
    """Yield each row of a corpus JSONL file (see `iter_documents_sized` for the checks)."""
    for row, _ in iter_documents_sized(path):
        yield row


def iter_texts(path: str | Path) -> Iterator[str]:
    for row in iter_documents(path):
        yield row["text"]
