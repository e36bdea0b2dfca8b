"""What every `restgov` command shares: the default database, the `--db` option and opening the store."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_DB = os.environ.get("RESTGOV_DB", "data/restgov.duckdb")


def add_db_argument(
    parser: Any, default: str | None = DEFAULT_DB, help: str | None = None
) -> argparse.Action:
    """Add `--db PATH` to a parser (or an argument group); `default` None leaves it unset unless given."""
    if help is None:
        help = f"DuckDB file (default {default}; env RESTGOV_DB)"
    return parser.add_argument("--db", default=default, help=help)


def add_command(
    subparsers: Any,
    name: str,
    help: str,
    fn: Callable[[argparse.Namespace], int],
    default_db: str = DEFAULT_DB,
) -> argparse.ArgumentParser:
    """A subcommand whose description is its help line, with `--db` first and `fn` as its handler."""
    p = subparsers.add_parser(name, help=help, description=help)
    add_db_argument(p, default_db)
    p.set_defaults(fn=fn)
    return p


def open_store(db: str, create: bool = False, new_file: bool = False):
    """The store at `db`, or exit with one line `error: ...` naming the file: missing (unless `create`),
    damaged, or held by another process.

    `create` (run, demo, dashboard) makes a missing folder, saying "created FOLDER" once, and the file;
    `new_file` (users add) makes the file in an existing folder only; otherwise both must exist.
    """
    from engine.store import StoreError
    from engine.store import open_store as _open

    folder = Path(db).resolve().parent
    new_folder = create and not folder.exists()
    try:
        store = _open(db, create=create or (new_file and folder.is_dir()))
    except StoreError as e:
        sys.exit(f"error: {e}")
    if new_folder:
        print(f"created {folder}", flush=True)
    return store


def add_actor_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """`--actor NAME` (default $USER): who did `what`, recorded in the campaign's event log."""
    parser.add_argument(
        "--actor", default=os.environ.get("USER", "cli"), help=f"who {what} (recorded; default $USER)"
    )
