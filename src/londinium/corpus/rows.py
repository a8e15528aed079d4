"""Files of rows -> texts: JSONL lines, and the tables in Parquet and Arrow files (what Hugging Face
`datasets` writes: `save_to_disk` folders hold Arrow streams, `Dataset.to_parquet` writes Parquet).

Every row format reads three fields of its source (`SourceSpec`): `text_field` holds the text;
consecutive rows with equal `group_by` values are joined into one text, one row a line (verses into
chapters); the values of `title_fields` make its title. A row without a string in `text_field` is a
bad row, recorded with where it is (`line 3`, `row 12`) while the other rows go on. A file is
rejected whole (`RowsError`, one line naming the file and what to do) when none of its rows is
usable, when a table lacks a named column or its text column does not hold text, or when pyarrow
cannot read it (truncated, corrupt, not the format its name or first bytes claim).

Tables are read with pyarrow, the library the Arrow and Parquet formats are maintained in; it is an
optional extra (`pip install 'londinium[parquet]'`, ~170 MB installed) that only table sources need.
A table is read a batch at a time (Parquet: row group by row group, at most `BATCH_ROWS` rows
decoded at once) and only the named columns are decoded, so a wide or large table is never held
decoded whole; its bytes are held like any file's, up to `corpus.max_file_mb`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from londinium.errors import LondiniumError
from londinium.files import loads_json

if TYPE_CHECKING:
    from londinium.corpus.sources import SourceSpec

TABLE_FORMATS = ("parquet", "arrow")
FORMAT_NAMES = {"parquet": "Parquet", "arrow": "Arrow IPC"}
# Rows decoded at once from a Parquet row group: a few MB of text, however long the row group.
BATCH_ROWS = 1024

# One row as a reader hands it on: where it is, its fields (a dict, for JSONL any JSON value), and
# why it could not be read ("" when it could).
Row = tuple[str, Any, str]


class RowsError(LondiniumError):
    """One file of rows cannot be used at all; the message names the file and what to do."""


@dataclass
class JoinedRows:
    texts: list[tuple[str, str]]  # (title, text); the title is "" where title_fields give none
    bad_rows: list[str]  # "line 3: not valid JSON (...)", "row 12: no string field 'text' ..."
    rows: int


def join_rows(rows: Iterable[Row], spec: SourceSpec, name: str) -> JoinedRows:
    """Rows -> texts. Consecutive rows with equal `group_by` values are joined, one row a line."""
    field = spec.text_field
    groups: list[tuple[tuple[str, ...], str, list[str]]] = []
    bad: list[str] = []
    count = 0
    for where, row, problem in rows:
        count += 1
        if problem:
            bad.append(f"{where}: {problem}")
            continue
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            bad.append(f"{where}: no string field '{field}' (set text_field)")
            continue
        key = tuple(str(row.get(k, "")) for k in spec.group_by)
        title = " ".join(str(row[k]) for k in spec.title_fields if row.get(k) not in (None, ""))
        if spec.group_by and groups and groups[-1][0] == key:
            groups[-1][2].append(row[field])
        else:
            groups.append((key, title, [row[field]]))
    if not count:
        raise RowsError(f"{name}: has no rows")
    if len(bad) == count:
        raise RowsError(f"{name}: none of its {count} rows is usable ({bad[0]})")
    return JoinedRows([(title, "\n".join(lines)) for _, title, lines in groups], bad, count)


def jsonl_rows(text: str) -> Iterator[Row]:
    """The rows of decoded JSONL text, one a non-blank line."""
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield f"line {lineno}", loads_json(line), ""
        except json.JSONDecodeError as e:
            yield f"line {lineno}", None, f"not valid JSON ({e.msg})"


def table_rows(data: bytes, fmt: str, name: str, spec: SourceSpec) -> Iterator[Row]:
    """The rows of a Parquet or Arrow IPC (file or stream) table, with only the columns `spec`
    names, a batch at a time. Raises RowsError for a file that cannot be read as such a table."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RowsError(f"{name}: reading {FORMAT_NAMES[fmt]} files needs the optional extra: "
                        "pip install 'londinium[parquet]'") from None
    columns = list(dict.fromkeys([spec.text_field, *spec.group_by, *spec.title_fields]))
    count = 0
    try:
        if fmt == "parquet":
            table = pq.ParquetFile(pa.BufferReader(data))
            _check_columns(pa, table.schema_arrow, spec, name)
            batches: Iterable[Any] = table.iter_batches(batch_size=BATCH_ROWS, columns=columns)
        elif data.startswith(b"ARROW1"):  # the IPC file format (Feather 2); else the stream format
            reader = pa.ipc.open_file(pa.BufferReader(data))
            _check_columns(pa, reader.schema, spec, name)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            reader = pa.ipc.open_stream(pa.BufferReader(data))
            _check_columns(pa, reader.schema, spec, name)
            batches = reader
        for batch in batches:
            values = [batch.column(c).to_pylist() for c in columns]
            for row in zip(*values):
                count += 1
                yield f"row {count}", dict(zip(columns, row)), ""
    except (pa.ArrowException, OSError, ValueError) as e:
        where = f" after row {count}" if count else ""
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RowsError(f"{name}: not a readable {FORMAT_NAMES[fmt]} file{where} ({reason}); "
                        "check the file, or write it again") from None


def _check_columns(pa: Any, schema: Any, spec: SourceSpec, name: str) -> None:
    """Every named column exists and the text column holds strings, or one RowsError saying which."""
    names = schema.names
    for setting, wanted in (("text_field", [spec.text_field]), ("group_by", spec.group_by), ("title_fields", spec.title_fields)):
        for column in wanted:
            if column not in names:
                raise RowsError(f"{name}: no column '{column}' (its columns: {', '.join(names) or 'none'}); "
                                f"set {setting} in the sources registry")
    kind = schema.field(spec.text_field).type
    if not _is_text(pa, kind):
        text_columns = [f.name for f in schema if _is_text(pa, f.type)]
        hint = f"one of {', '.join(text_columns)}" if text_columns else "a column of strings"
        raise RowsError(f"{name}: column '{spec.text_field}' holds {kind}, not text; set text_field to {hint}")


def _is_text(pa: Any, kind: Any) -> bool:
    if pa.types.is_dictionary(kind):  # categorical strings
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or getattr(pa.types, "is_string_view", lambda k: False)(kind)
