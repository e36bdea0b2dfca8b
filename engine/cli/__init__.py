"""The `restgov` command line: run, resume, inspect, govern and export ReST campaigns.

The parser is assembled from a list of command groups: the engine's own (`COMMANDS`) and those that other
installed packages declare under the `restgov.commands` entry-point group, each naming a
`register(subparsers)` function (the dashboard's `dashboard` and `users`, the reward unit tests'
`reward-test`). Every command takes `--db PATH` (default data/restgov.duckdb, env RESTGOV_DB).

`main` runs the chosen handler through `common.run_command`: an expected failure (a path that cannot be
read or written, a missing, busy or damaged store) is one `error: ...` line on stderr and exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from . import campaigns, governance, lora, refresh, score  # noqa: E402
from .common import DEFAULT_DB, add_db_argument, open_store, run_command  # noqa: E402

ENTRY_POINT_GROUP = "restgov.commands"
COMMANDS: tuple[Callable, ...] = (
    campaigns.register,
    governance.register,
    refresh.register,
    score.register,
    lora.register,
)


def _warn(name: str, e: BaseException) -> None:
    msg = (str(e).strip().splitlines() or [""])[0]
    print(f"warning: restgov commands {name!r} skipped: {type(e).__name__}: {msg}", file=sys.stderr)


def plugin_commands() -> Iterator[tuple[str, Callable[[Any], Any]]]:
    """(entry-point name, register function) of each `restgov.commands` plugin that loads, by name.

    One that cannot be loaded is skipped with a one-line warning on stderr.
    """
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        try:
            register = ep.load()
        except Exception as e:
            _warn(f"{ep.name} = {ep.value}", e)
            continue
        yield f"{ep.name} = {ep.value}", register


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restgov",
        description="Run and govern ReST / ReST-EM campaigns: Grow samples, score them, Improve on the best, "
        "repeat.",
        epilog="Campaign data live in a DuckDB file (--db); run artefacts (checkpoints, shards) beside it in "
        "runs/. A path that cannot be read or written, or a missing, busy or damaged --db, is one error line "
        "and exit status 2.",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(sub)
    for name, register in plugin_commands():
        try:
            register(sub)
        except Exception as e:
            _warn(name, e)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.fn, args)


__all__ = [
    "COMMANDS",
    "DEFAULT_DB",
    "ENTRY_POINT_GROUP",
    "add_db_argument",
    "build_parser",
    "main",
    "open_store",
    "run_command",
]
