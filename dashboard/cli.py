"""`restgov dashboard` and `restgov users`: the dashboard's commands, a `restgov.commands` entry point.

`restgov dashboard` runs `streamlit run dashboard/serve.py` (dashboard/app.py plus the route that sets the
HttpOnly session cookie) in this process (exec), so the dashboard's server becomes the controller that owns
the DuckDB file. Accounts are managed while it is stopped (or on its Users page).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from engine.cli.common import DEFAULT_DB, add_db_argument, open_store, run_command

APP = Path(__file__).resolve().parent / "serve.py"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def streamlit_argv(db: str, port: int, address: str, local: bool) -> list[str]:
    """The `python -m streamlit run` command line the dashboard command executes."""
    argv = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.runOnSave",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "minimal",
        "--",
        "--db",
        db,
    ]
    return argv + (["--local"] if local else [])


def cmd_dashboard(a: argparse.Namespace) -> int:
    address = a.address or "127.0.0.1"
    if a.local and address not in LOOPBACK:
        sys.exit(
            f"error: --local skips sign-in, so it only listens on this machine (127.0.0.1), not {address}"
        )
    db = str(Path(a.db).resolve())
    # The server opens (and creates) it too; opening here first turns a missing folder into "created ..." once
    # and a damaged or held file into one line before streamlit starts.
    open_store(db, create=True).close()
    print(
        f"restgov dashboard on http://{address}:{a.port}  "
        f"(db {db}{', local mode: no sign-in' if a.local else ''})",
        flush=True,
    )
    env = os.environ | {"RESTGOV_DB": db, "RESTGOV_LOCAL": "1" if a.local else "0", "HF_HUB_OFFLINE": "1"}
    argv = streamlit_argv(db, a.port, address, a.local)
    os.execve(sys.executable, argv, env)
    return 0  # pragma: no cover


def cmd_users_add(a: argparse.Namespace) -> int:
    if a.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {a.name}: ")
        if password != getpass.getpass("again: "):
            sys.exit("error: the passwords differ")
    store = open_store(a.db, new_file=True)
    try:
        store.add_user(a.name, a.role, password, actor="cli", replace=a.replace)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"user {a.name} ({a.role}) saved in {a.db}")
    return 0


def cmd_users_list(a: argparse.Namespace) -> int:
    for u in open_store(a.db).users():
        print(f"{u['name']:<24} {u['role']:<10} {u['created_at']}{'  disabled' if u['disabled'] else ''}")
    return 0


def cmd_users_remove(a: argparse.Namespace) -> int:
    if not open_store(a.db).remove_user(a.name, actor="cli"):
        sys.exit(f"error: no user {a.name!r} in {a.db}")
    print(f"user {a.name} removed")
    return 0


def register(sub) -> None:
    """Add `dashboard` and `users` to restgov's subcommands (sub = the parser's add_subparsers())."""
    from engine.store.users import ROLES

    h = (
        "Start the web dashboard: campaigns, reward distributions, rating, audit "
        "(it owns the database while it runs)."
    )
    d = sub.add_parser("dashboard", help=h, description=h)
    add_db_argument(d)
    d.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    d.add_argument(
        "--address", help="address to listen on (default 127.0.0.1; 0.0.0.0 to serve a team, with sign-in)"
    )
    d.add_argument(
        "--local",
        action="store_true",
        help="single person on this machine: no sign-in, you are an operator; listens on 127.0.0.1 only",
    )
    d.set_defaults(fn=cmd_dashboard)

    h = "Manage dashboard accounts (roles: operator, annotator, auditor); run while the dashboard is stopped."
    u = sub.add_parser("users", help=h, description=h)
    us = u.add_subparsers(dest="users_cmd", required=True, metavar="ACTION")
    h = "create an account (password asked twice, or read from stdin)"
    add = us.add_parser("add", help=h, description=h[0].upper() + h[1:] + ".")
    add_db_argument(
        add, help=f"DuckDB file (default {DEFAULT_DB}; env RESTGOV_DB); made in an existing folder"
    )
    add.add_argument("name", help="account name, used to sign in")
    add.add_argument(
        "--role",
        required=True,
        choices=list(ROLES),
        help="operator: every page (runs campaigns, manages accounts); annotator: the Rate page; "
        "auditor: the audit pages, read-only",
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )
    add.add_argument(
        "--replace", action="store_true", help="reset the password and role of an existing account"
    )
    add.set_defaults(fn=cmd_users_add)
    ls = us.add_parser("list", help="list accounts and roles", description="List accounts and roles.")
    add_db_argument(ls)
    ls.set_defaults(fn=cmd_users_list)
    rm = us.add_parser(
        "remove", help="delete an account and its sessions", description="Delete an account and its sessions."
    )
    add_db_argument(rm)
    rm.add_argument("name", help="account name (see `restgov users list`)")
    rm.set_defaults(fn=cmd_users_remove)


def main(argv: list[str] | None = None) -> int:
    """`python -m dashboard.cli dashboard|users ...`: these commands without the rest of restgov's."""
    p = argparse.ArgumentParser(prog="restgov")
    register(p.add_subparsers(dest="cmd", required=True, metavar="COMMAND"))
    a = p.parse_args(argv)
    return run_command(a.fn, a)


if __name__ == "__main__":
    sys.exit(main())
