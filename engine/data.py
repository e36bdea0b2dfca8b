"""Load and validate (source, reference) examples from JSONL, CSV or Parquet files.
Every bad row is reported with file, line (or Parquet row), field and problem; nothing loads partially."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.config import DataConfig

MAX_SHOWN = 20  # a file with thousands of bad rows should still give a readable message
COLUMNS = ("id", "source", "reference")  # what write_examples writes

# Long documents are legitimate sources; the csv module's default 128 KiB field cap would reject them.
csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))


@dataclass(frozen=True)
class Example:
    id: str  # the id_field value as a string, else the 0-based row number
    source: str
    reference: str  # "" only when loaded with allow_missing_reference=True


class DataError(ValueError):
    """A data file is missing, unreadable or has bad rows; `.problems` lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        more = len(self.problems) - MAX_SHOWN
        super().__init__(
            "\n".join(self.problems[:MAX_SHOWN] + ([f"... and {more} more"] if more > 0 else []))
        )


Row = tuple[str, dict[str, Any] | None]  # (where, record); None: the row's problem is already recorded
Parsed = tuple[str, list[str] | None, list[Row]]  # (where columns are named, columns or None for JSONL, rows)


def _decode_lines(data: bytes, label: str, problems: list[str]) -> tuple[list[str], set[int]]:
    """Decode per line so one bad byte is reported with its line number instead of failing the file."""
    data = data.removeprefix(b"\xef\xbb\xbf")  # spreadsheet exports often start with a UTF-8 BOM
    lines, bad = [], set()
    for n, raw in enumerate(data.splitlines(keepends=True), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad.add(n)
            problems.append(f"{label} line {n}: not valid UTF-8")
            lines.append(raw.decode("utf-8", errors="replace"))  # keeps CSV quoting in step
    return lines, bad


def _jsonl(data: bytes, label: str, problems: list[str]) -> Parsed:
    lines, bad = _decode_lines(data, label, problems)
    rows: list[Row] = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where, rec = f"{label} line {n}", None
        if n not in bad:  # a bad-UTF-8 line is reported already
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    problems.append(f"{where}: not a JSON object (got {type(rec).__name__})")
                    rec = None
            except json.JSONDecodeError as e:
                problems.append(f"{where}: not valid JSON ({e.msg})")
        rows.append((where, rec))
    return label, None, rows


def _csv(data: bytes, label: str, problems: list[str]) -> Parsed:
    lines, bad = _decode_lines(data, label, problems)
    # strict: an unclosed quote would otherwise silently swallow the rest of the file into one field
    reader, header, header_at, rows = csv.reader(lines, strict=True), None, label, []
    end = 0  # physical line where the previous record ended: a quoted field may span lines
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            where = f"{label} line {start}"
            if not cells:
                continue  # blank line
            if header is None:  # used even with bad bytes: its UTF-8 problem is recorded
                header, header_at = cells, where
            elif any(n in bad for n in range(start, end + 1)):
                rows.append((where, None))
            elif len(cells) > len(header):  # usually a quoting mistake that shifted the columns
                problems.append(f"{where}: {len(cells)} fields but the header has {len(header)}")
                rows.append((where, None))
            else:
                rows.append(
                    (where, dict(zip(header, cells, strict=False)))
                )  # short rows leave fields missing
    except csv.Error as e:
        problems.append(f"{label} line {end + 1}: malformed CSV ({e})")
    if header is None:
        problems.append(f"{label}: a header row is required")
    return header_at, header, rows


def _parquet(data: bytes, label: str, problems: list[str]) -> Parsed:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as e:
        problems.append(f"{label}: not a readable Parquet file ({e})")
        return label, None, []
    return label, table.column_names, [(f"{label} row {i}", r) for i, r in enumerate(table.to_pylist())]


READERS: dict[str, Callable[[bytes, str, list[str]], Parsed]] = {
    ".jsonl": _jsonl,
    ".csv": _csv,
    ".parquet": _parquet,
}


def _suffix(path: Path) -> str:
    if (suffix := path.suffix.lower()) not in READERS:
        raise DataError([f"{path}: unsupported file type {suffix!r}; use one of {list(READERS)}"])
    return suffix


def _text(
    rec: dict[str, Any], field: str, where: str, problems: list[str], optional: bool = False
) -> str | None:
    """The field as a non-blank string ("" if optional and blank or absent), or None after recording why
    not."""
    v = rec.get(field)
    v = None if isinstance(v, float) and math.isnan(v) else v  # pandas writes NaN for missing cells
    # bool is an int subclass, but True as a source or id is almost surely a column mix-up
    if isinstance(v, bool) or not isinstance(v, str | int | float | None):
        problems.append(f"{where}: field '{field}' must be a string, got {type(v).__name__} {v!r:.60}")
        return None
    s = "" if v is None else v if isinstance(v, str) else str(v)
    if s.strip() or optional:
        return s if s.strip() else ""
    problems.append(
        f"{where}: field '{field}' is {'missing' if field not in rec else 'null' if v is None else 'empty'}"
    )
    return None


def _position(problem: str, label: str) -> int:
    words = problem[len(label) :].split(":", 1)[0].split()  # ["line", "12"], ["row", "3"] or [] for the file
    return int(words[1]) if len(words) == 2 else -1


def load_examples(
    path: str | Path,
    source_field: str = "source",
    reference_field: str = "reference",
    id_field: str | None = None,
    allow_missing_reference: bool = False,
) -> list[Example]:
    """Read every row of a .jsonl/.csv/.parquet file; raise DataError listing all bad rows."""
    label, path = str(path), Path(path)
    if not path.is_file() and _suffix(path):
        raise DataError([f"{label}: no such file"])
    problems: list[str] = []
    header_at, columns, rows = READERS[_suffix(path)](path.read_bytes(), label, problems)
    required = (
        [source_field] + ([] if allow_missing_reference else [reference_field]) + [id_field or source_field]
    )
    missing = [f for f in dict.fromkeys(required) if columns is not None and f not in columns]
    if missing:  # reported once rather than once per row
        raise DataError(
            problems + [f"{header_at}: column '{f}' is missing (columns: {columns})" for f in missing]
        )
    seen: dict[str, str] = {}  # id -> where it first appeared
    out: list[Example] = []
    for row_no, (where, rec) in enumerate(rows):
        if rec is None:
            continue
        src = _text(rec, source_field, where, problems)
        ref = _text(rec, reference_field, where, problems, optional=allow_missing_reference)
        ex_id = _text(rec, id_field, where, problems) if id_field else str(row_no)
        if id_field and ex_id is not None:
            if ex_id in seen:
                problems.append(f"{where}: field '{id_field}' value {ex_id!r} duplicates {seen[ex_id]}")
            seen.setdefault(ex_id, where)
        if src is not None and ref is not None and ex_id is not None:
            out.append(Example(id=ex_id, source=src, reference=ref))
    if not problems and not out:  # with no problems every row became an Example
        problems.append(f"{label}: no rows")
    if problems:  # readers record some problems before the row checks run; list all in file order
        raise DataError(sorted(problems, key=lambda p: _position(p, label)))
    return out


def load_split(cfg: DataConfig, split: str) -> list[Example]:
    """Load the train, validation, test or bootstrap file named in the config; an unset optional split gives
    []."""
    if split not in ("train", "validation", "test", "bootstrap"):
        raise ValueError(f"split {split!r}: use one of train, validation, test, bootstrap")
    path = getattr(cfg, split)
    return load_examples(path, cfg.source_field, cfg.reference_field, cfg.id_field) if path else []


def write_examples(path: str | Path, examples: list[Example]) -> None:
    """Write id/source/reference columns in the format the suffix names."""
    path = Path(path)
    suffix = _suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [(e.id, e.source, e.reference) for e in examples]
    if suffix == ".jsonl":
        with path.open("w", encoding="utf-8", newline="\n") as f:
            f.writelines(
                json.dumps(dict(zip(COLUMNS, r, strict=True)), ensure_ascii=False) + "\n" for r in rows
            )
    elif suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as f:  # newline="": csv quotes embedded newlines
            csv.writer(f).writerows([COLUMNS, *rows])
    else:
        cols = {k: pa.array([r[i] for r in rows], type=pa.string()) for i, k in enumerate(COLUMNS)}
        pq.write_table(pa.table(cols), path)
