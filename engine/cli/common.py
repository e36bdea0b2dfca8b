"""What every `restgov` command shares: the default database, the `--db` option, opening the store, checking
the paths a command writes, and turning an expected failure (a path that cannot be read or written, a
damaged or busy store) into one line on stderr with exit status 2 instead of a traceback."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

EXIT_BAD_PATH = (
    2  # a path or a store that cannot be used (1 is a command's own verdict: an alarm, a failed test)
)

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
        fail(str(e))
    if new_folder:
        print(f"created {folder}", flush=True)
    return store


def add_actor_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """`--actor NAME` (default $USER): who did `what`, recorded in the campaign's event log."""
    parser.add_argument(
        "--actor", default=os.environ.get("USER", "cli"), help=f"who {what} (recorded; default $USER)"
    )


def fail(message: str) -> NoReturn:
    """Print `error: MESSAGE` (one line) on stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_PATH)


def _existing_ancestor(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def os_error_message(e: OSError) -> str:
    """One line for an OSError: the path and what to do about it."""
    path = e.filename
    if path is None:
        return f"{e.strerror or e}"
    p = Path(os.fsdecode(path))
    code = e.errno
    if code == errno.ENOENT and not p.parent.exists():
        anc = _existing_ancestor(p.parent)
        if anc.exists() and not anc.is_dir():
            return f"{p}: {anc} is a file, not a folder: choose another path"
        return f"{p}: the folder {p.parent} does not exist: create it first or choose another path"
    if code == errno.ENOTDIR:
        anc = _existing_ancestor(p)
        where = anc if anc.exists() and not anc.is_dir() else "a part of the path"
        return f"{p}: {where} is a file, not a folder: choose another path"
    hints = {
        errno.ENOENT: "no such file or directory: check the path",
        errno.EISDIR: "is a folder: give a file name",
        errno.EEXIST: "already exists: remove it or choose another path",
        errno.EACCES: "permission denied: choose a path you may use, or change its permissions",
        errno.EPERM: "operation not permitted: choose a path you may use, or change its permissions",
        errno.EROFS: "on a read-only file system: choose a writable location",
        errno.ENOSPC: "no space left on the device: free some space or choose another disk",
    }
    return f"{p}: {hints.get(code, (e.strerror or str(e)).lower())}"


_QUOTED_PATH = re.compile(r'"([^"]+)"(?::\s*(.*))?')


def duckdb_error_message(e: Exception, db: str | None) -> str | None:
    """One line for a DuckDB error that stands for a bad file: the store `db` found damaged while it was read
    (a truncated copy can open, then fail on the first table it reads), or a file DuckDB could not read or
    write (COPY ... TO a bad path). None for other DuckDB errors, which are bugs."""
    import duckdb

    if not isinstance(e, duckdb.IOException | duckdb.PermissionException | duckdb.SerializationException):
        return None
    msg = " ".join(str(e).split())
    m = _QUOTED_PATH.search(msg)
    path = Path(m.group(1)) if m else None
    same = db is not None and path is not None and path.resolve() == Path(db).resolve()
    if isinstance(e, duckdb.SerializationException) or (same and "Could not read" in msg):
        where = db if db is not None else "the store"
        return (
            f"cannot read {where}: the file is damaged (not a readable DuckDB database: {msg}). "
            "Restore it from a backup (README: 'Backup and restore') or point --db at another file."
        )
    if path is None:
        return msg
    reason = (m.group(2) or msg).rstrip(".")
    if path.is_dir():
        return f"{path} is a folder: give a file name"
    if not path.parent.exists():
        return os_error_message(FileNotFoundError(errno.ENOENT, reason, str(path)))
    return f"{path}: {reason.lower()}: choose a path in a folder you can write to"


def expected_error_message(e: BaseException, db: str | None = None) -> str | None:
    """The one-line message of an expected failure (a bad path, a damaged or busy store), or None for an
    unexpected one, which keeps its traceback."""
    from engine.store import StoreError

    if isinstance(e, StoreError):
        return str(e)
    if isinstance(e, OSError):
        return os_error_message(e)
    if isinstance(e, Exception) and type(e).__module__.split(".")[0] in ("duckdb", "_duckdb"):
        return duckdb_error_message(e, db)
    return None


def run_command(fn: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command's handler: its exit status, or 2 with one `error: ...` line for an expected failure."""
    try:
        return fn(args) or 0
    except BrokenPipeError:  # `restgov status | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:
        msg = expected_error_message(e, getattr(args, "db", None))
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr, flush=True)
        return EXIT_BAD_PATH


def check_input_file(path: str, what: str) -> None:
    """Exit with one line unless `path` is a file this process can read; `what` names it (CONFIG, --data)."""
    p = Path(path)
    if p.is_dir():
        fail(f"{what} {p} is a folder: give the file inside it")
    if not p.exists():
        anc = _existing_ancestor(p.parent)
        if anc.exists() and not anc.is_dir():
            fail(f"{what} {p}: {anc} is a file, not a folder")
        fail(f"{what} {p}: no such file: check the path")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as e:
        fail(f"{what} {os_error_message(e)}")


def _cannot(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


def _check_folder(p: Path, what: str) -> None:
    """Exit with one line unless the folder `p` a path given as `what` lies in exists."""
    if p.parent.is_dir():
        return
    anc = _existing_ancestor(p.parent)
    if anc.exists() and not anc.is_dir():
        fail(f"{what} {p}: {anc} is a file, not a folder: choose another path")
    fail(f"{what} {p}: the folder {p.parent} does not exist: create it first or choose another path")


def check_output_file(path: str | Path, what: str, example: str = "out.parquet") -> None:
    """Exit with one line unless a file can be written at `path` (left as it is here); `what` names the option
    (--out) and `example` a file name to suggest when `path` is a folder."""
    p = Path(path)
    if p.is_dir():
        fail(f"{what} {p} is a folder: give a file name, e.g. {p / example}")
    _check_folder(p, what)
    try:  # the only sure test of writing (permissions, read-only mounts, /proc, root) is to write
        with tempfile.NamedTemporaryFile(dir=p.parent, prefix=".restgov-check-"):
            pass
        if p.exists():
            with open(p, "ab"):
                pass
    except OSError as e:
        fail(f"{what} {p}: cannot write there ({_cannot(e)}): choose a folder you can write to")


def check_output_dir(path: str | Path, what: str, new: bool = True) -> None:
    """Exit with one line unless files can be written in the folder `path`: with `new`, it must not exist yet;
    missing folders on the way are made by the command."""
    p = Path(path)
    if new and p.exists():
        fail(f"{what} {p} already exists: give a new folder")
    anc = _existing_ancestor(p)
    if not anc.is_dir():
        fail(f"{what} {p}: {anc} is a file, not a folder: choose another path")
    try:
        tempfile.TemporaryDirectory(dir=anc, prefix=".restgov-check-").cleanup()
    except OSError as e:
        fail(f"{what} {p}: cannot write in {anc} ({_cannot(e)}): choose another path")
