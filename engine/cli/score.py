"""`restgov score`: score a file of (source, candidate) rows with a reward, outside any campaign.

The reward comes from a TOML file holding a [reward] table or a whole campaign config; the rows from a
.jsonl, .csv or .parquet file with `source` and `candidate` columns (optionally `reference` and `id`; other
columns are kept as they are). The output is the same rows plus a `reward` column, in the format its
extension names.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import add_db_argument

HELP = (
    "Score a file of (source, candidate) rows with a reward ([reward] table or campaign TOML) and write the "
    "rows with a reward column."
)
FORMATS = (".jsonl", ".csv", ".parquet")
REQUIRED = ("source", "candidate")


class ScoreError(Exception):
    """A problem the user can fix; its message is printed as is."""


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def _check_paths(a: argparse.Namespace) -> None:
    from .common import check_input_file, check_output_file

    check_input_file(a.reward_config, "--reward-config")
    check_input_file(a.data, "--data")
    data, out = Path(a.data), Path(a.out)
    for what, p in (("--data", data), ("--out", out)):
        if p.suffix.lower() not in FORMATS:
            raise ScoreError(f"{what} {p}: unsupported file type {p.suffix!r}; use one of {list(FORMATS)}")
    if out.exists() and out.resolve() == data.resolve():
        raise ScoreError(f"--out {out} is the --data file: give another file name")
    check_output_file(out, "--out", "scored.jsonl")


def _value_problem(rec: dict, field: str, blank_ok: bool) -> str | None:
    """Why the field cannot be used as text, or None."""
    if field not in rec:
        return f"field '{field}' is missing"
    v = rec[field]
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return f"field '{field}' is null"
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        return f"field '{field}' must be a string, got {type(v).__name__} {v!r:.60}"
    if not blank_ok and not str(v).strip():
        return f"field '{field}' is empty"
    return None


def read_rows(path: Path, needs_reference: bool) -> tuple[list[str], list[tuple[str, dict[str, Any]]]]:
    """(columns, [(where, row)]) of a data file, every row checked; ScoreError listing every bad row by line
    (JSONL, CSV) or row (Parquet), as campaign data are reported."""
    from engine.data import MAX_SHOWN, READERS

    problems: list[str] = []
    label = str(path)
    header_at, columns, rows = READERS[path.suffix.lower()](path.read_bytes(), label, problems)
    required = [*REQUIRED, *(["reference"] if needs_reference else [])]
    if columns is not None:
        missing = [f for f in required if f not in columns]
        if missing:
            problems += [f"{header_at}: column '{f}' is missing (columns: {columns})" for f in missing]
            raise ScoreError(_problems(label, problems, MAX_SHOWN))
    out: list[tuple[str, dict[str, Any]]] = []
    names: dict[str, None] = dict.fromkeys(columns or [])
    for where, rec in rows:
        if rec is None:
            continue  # its problem is recorded already
        bad = [
            p
            for p in (
                _value_problem(rec, "source", blank_ok=False),
                _value_problem(rec, "candidate", blank_ok=True),
                _value_problem(rec, "reference", blank_ok=True) if needs_reference else None,
            )
            if p
        ]
        if "reference" in rec and not needs_reference and rec["reference"] is not None:
            ref = rec["reference"]
            if isinstance(ref, bool) or not isinstance(ref, str | int | float):
                bad.append(f"field 'reference' must be a string, got {type(ref).__name__} {ref!r:.60}")
        problems += [f"{where}: {p}" for p in bad]
        if not bad:
            names.update(dict.fromkeys(rec))
            out.append((where, rec))
    if not problems and not out:
        problems.append(f"{label}: no rows")
    if problems:
        raise ScoreError(_problems(label, problems, MAX_SHOWN))
    return list(names), out


def _problems(label: str, problems: list[str], shown: int) -> str:
    more = len(problems) - shown
    lines = problems[:shown] + ([f"... and {more} more"] if more > 0 else [])
    n = len(problems)
    return f"--data {label}: {n} problem{'s' if n != 1 else ''}\n" + "\n".join(lines)


def _text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return v if isinstance(v, str) else str(v)


def _cell(v: Any) -> Any:
    """A value as a CSV cell: nested values as JSON, missing ones empty."""
    if v is None:
        return ""
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False, default=str)
    return v


def write_rows(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Write the rows in the format the suffix names, atomically (a temporary file renamed into place)."""
    suffix = path.suffix.lower()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                for r in rows:
                    f.write(
                        json.dumps({c: r.get(c) for c in columns}, ensure_ascii=False, default=str) + "\n"
                    )
        elif suffix == ".csv":
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(columns)
                w.writerows([[_cell(r.get(c)) for c in columns] for r in rows])
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows])
            except (pa.ArrowException, TypeError, ValueError) as e:
                raise ScoreError(
                    f"--out {path}: the rows do not fit one Parquet column type each ({e}); "
                    "write .jsonl or .csv instead"
                ) from e
            pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        transient=False,
    )


def cmd_score(a: argparse.Namespace) -> int:
    try:
        return _score(a)
    except ScoreError as e:
        return _fail(str(e))


def _score(a: argparse.Namespace) -> int:
    from engine.config import ConfigError, load_reward_config
    from engine.rewards import RewardError, checked_scores, load_reward
    from engine.rewards.base import batches

    _check_paths(a)
    try:
        rc = load_reward_config(a.reward_config)
    except ConfigError as e:
        raise ScoreError(f"in {a.reward_config}: {e}") from e
    if a.batch_size is not None:
        if a.batch_size < 1:
            raise ScoreError(f"--batch-size {a.batch_size}: must be >= 1")
        rc.batch_size = a.batch_size
    try:
        reward = load_reward(rc)
    except (RewardError, FileNotFoundError, ImportError) as e:
        raise ScoreError(f"in {a.reward_config}: cannot load the reward: {e}") from e
    columns, located = read_rows(Path(a.data), reward.needs_reference)
    rows = [r for _, r in located]
    info = reward.describe()
    how = f" (format {info['format']}: {info['format_reason']})" if "format" in info else ""
    print(f"reward {reward.name} version {reward.version}{how}", flush=True)
    sources = [_text(r["source"]) for r in rows]
    cands = [_text(r["candidate"]) for r in rows]
    refs = [_text(r.get("reference")) for r in rows] if reward.needs_reference else None
    ids = [r["id"] if r.get("id") is not None else where for where, r in located]
    scores: list[float] = []
    try:
        with _progress() as bar:
            task = bar.add_task("score", total=len(rows))
            for sl in batches(len(rows), reward.batch_size):
                scores += checked_scores(
                    reward, sources[sl], cands[sl], refs[sl] if refs is not None else None, ids=ids[sl]
                )
                bar.update(task, completed=len(scores))
    except RewardError as e:
        raise ScoreError(str(e)) from e
    if "reward" in columns:
        print("note: the input's reward column is replaced by the new scores", flush=True)
    else:
        columns.append("reward")
    for r, s in zip(rows, scores, strict=True):
        r["reward"] = s
    out = Path(a.out)
    try:
        write_rows(out, columns, rows)
    except OSError as e:
        raise ScoreError(f"--out {out}: cannot write it ({e.strerror or e})") from e
    mean = sum(scores) / len(scores)
    print(f"scored {len(rows)} rows, mean reward {mean:.4f}: {out}", flush=True)
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `score` to restgov's subcommands."""
    p = subparsers.add_parser(
        "score",
        help=HELP,
        description=HELP + " An hf reward model is scored in its own training format (see [reward] format "
        "and prompt_template); bad rows are listed by line.",
    )
    p.add_argument(
        "--reward-config",
        required=True,
        metavar="TOML",
        help="a TOML file with a [reward] table, or a whole campaign config",
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help=".jsonl, .csv or .parquet rows with source and candidate (optionally reference, id)",
    )
    p.add_argument(
        "--out", required=True, metavar="FILE", help="output file: .jsonl, .csv or .parquet by extension"
    )
    p.add_argument("--batch-size", type=int, help="candidates per reward call (default: reward.batch_size)")
    add_db_argument(p, None, help="accepted as by every restgov command; score reads and writes no database")
    p.set_defaults(fn=cmd_score)
    return p
