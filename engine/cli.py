"""The `restgov` command line: run, resume, inspect and export ReST campaigns.

Every command takes `--db PATH` (default data/restgov.duckdb). The process that runs a command owns
the database for its duration; compute runs in worker subprocesses with progress bars here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_DB = os.environ.get("RESTGOV_DB", "data/restgov.duckdb")


def _open_store(db: str):
    from .store import Store

    try:
        return Store(db)
    except RuntimeError as e:
        sys.exit(f"error: {e}")


class _Bars:
    """Rich progress bars fed by worker events: one bar per campaign step."""

    def __init__(self):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.tasks: dict[str, int] = {}

    def __call__(self, key: str, ev: dict) -> None:
        if ev["kind"] == "progress":
            desc = ev.get("desc", key)
            info = []
            if ev.get("loss") is not None:
                info.append(f"loss {ev['loss']:.3f}")
            if ev.get("val_reward") is not None:
                info.append(f"val {ev['val_reward']:.3f}")
            if ev.get("samples_per_s"):
                info.append(f"{ev['samples_per_s']:.0f} samples/s")
            tid = self.tasks.get(desc)
            if tid is None:
                tid = self.tasks[desc] = self.progress.add_task(desc, total=ev["total"], info="")
            self.progress.update(tid, completed=ev["done"], total=ev["total"], info="  ".join(info))
        elif ev["kind"] == "error":
            self.progress.console.print(f"[red]{key}: {ev['message']}")


def _drive(store, cid: str, override_gates: tuple[str, ...] = (), actor: str = "cli") -> int:
    from .campaign import Controller

    bars = _Bars()
    ctl = Controller(store, on_event=bars)
    print(f"campaign {cid}  (db {store.path})")
    try:
        with bars.progress:
            state = ctl.run(cid, override_gates=override_gates, actor=actor)
    except KeyboardInterrupt:
        store.set_state(cid, "PAUSED", "interrupted from the terminal", actor="cli")
        print(f"\ninterrupted: resume with  restgov resume {cid} --db {store.path}")
        return 130
    _print_table(store, cid)
    if state == "PAUSED":
        print(
            f"paused by a gate: change the criteria (restgov criteria {cid} --set ...) or "
            f"override it once (restgov resume {cid} --override-gate NAME), then resume"
        )
    return 0 if state == "DONE" else 1


def _print_table(store, cid: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from .report import campaign_status

    st = campaign_status(store, cid)
    t = Table(title=f"{st['id']}  mode={st['mode']}  state={st['state']}")
    for col in ("grow", "improve", "policy", "rule", "tau/param", "kept", "kept mean reward", "val reward"):
        t.add_column(col, justify="right")
    f = lambda x, p=4: "" if x is None else (f"{x:.{p}f}" if isinstance(x, float) else str(x))  # noqa: E731
    for s in st["steps"]:
        param = s["tau"] if s["tau"] is not None else s["param"]
        t.add_row(
            str(s["grow"]),
            str(s["improve"]),
            s["policy"],
            s["rule"],
            f(param, 3),
            f(s["kept"]),
            f(s["kept_mean_reward"]),
            f(s["val_reward"]),
        )
    con = Console()
    con.print(t)
    if st["stop_reason"]:
        con.print(f"stop reason: {st['stop_reason']}")
    fin = st["final"]
    for pol, v in fin["mean_reward"].items():
        bon = "  ".join(f"N={n}: {x:.4f}" for n, x in sorted(fin["best_of_n"].get(pol, {}).items()))
        con.print(f"{fin['split']} reward  {pol:<8} {v:.4f}   best-of-N  {bon}")


def cmd_demo(a) -> int:
    from .recipes import prepare

    cfg_path = prepare(a.recipe, Path(a.data_dir) / "recipes", small=a.small)
    print(f"recipe {a.recipe}: data and config in {cfg_path.parent}")
    a.config = str(cfg_path)
    return cmd_run(a)


def cmd_run(a) -> int:
    from .campaign import new_campaign
    from .config import ConfigError, load_config
    from .data import DataError

    try:
        cfg = load_config(a.config)
    except ConfigError as e:
        sys.exit(f"error in {a.config}: {e}")
    store = _open_store(a.db)
    try:
        cid = new_campaign(store, cfg, Path(a.db).resolve().parent / "runs")
    except DataError as e:
        sys.exit(f"error in the data of {a.config}:\n{e}")
    return _drive(store, cid)


def cmd_resume(a) -> int:
    store = _open_store(a.db)
    row = store.campaign(a.id)
    if row is None:
        sys.exit(f"error: no campaign {a.id!r} in {a.db}; `restgov status --db {a.db}` lists them")
    store.add_event(a.id, "resume", "resumed from the command line", actor=a.actor)
    return _drive(store, a.id, tuple(a.override_gate), a.actor)


def cmd_criteria(a) -> int:
    import tomllib

    from .campaign import update_criteria
    from .config import ConfigError

    store = _open_store(a.db)
    if store.campaign(a.id) is None:
        sys.exit(f"error: no campaign {a.id!r} in {a.db}")
    changes = {}
    for item in a.set:
        key, sep, raw = item.partition("=")
        if not sep:
            sys.exit(f"error: --set {item!r}: use KEY=VALUE, e.g. stop.max_grow_steps=3")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        changes[key.strip()] = None if raw in ("", "none") else value
    if changes:
        try:
            update_criteria(store, a.id, changes, a.actor)
        except (ConfigError, ValueError) as e:
            sys.exit(f"error: {e}")
    cfg = store.campaign(a.id)["config"]
    print(json.dumps({k: cfg.get(k, {}) for k in ("stop", "gates")}, indent=2))
    return 0


def cmd_status(a) -> int:
    from .report import campaign_status

    store = _open_store(a.db)
    ids = [a.id] if a.id else [c["id"] for c in store.campaigns()]
    try:
        out = [campaign_status(store, i) for i in ids]
    except KeyError as e:
        sys.exit(f"error: {e.args[0]}")
    if a.json:
        print(json.dumps(out if not a.id else out[0], indent=2, default=str))
        return 0
    if not ids:
        print(f"no campaigns in {a.db}")
    if a.id:
        _print_table(store, a.id)
    else:
        for c in out:
            print(f"{c['id']:<28} {c['mode']:<8} {c['state']:<14} {c['stop_reason'] or ''}")
    return 0


def cmd_export(a) -> int:
    store = _open_store(a.db)
    if store.campaign(a.id) is None:
        sys.exit(f"error: no campaign {a.id!r} in {a.db}")
    out = a.out or f"{a.id}-samples.{a.format}"
    n = store.export_samples(a.id, out, a.format)
    print(f"wrote {n} samples to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="restgov",
        description="Run and govern ReST / ReST-EM campaigns: Grow samples, score them, Improve on the best, repeat.",
        epilog="Campaign data live in a DuckDB file (--db); run artefacts (checkpoints, shards) beside it in runs/.",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name: str, help: str, fn) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.add_argument(
            "--db", default=DEFAULT_DB, help=f"DuckDB file (default {DEFAULT_DB}; env RESTGOV_DB)"
        )
        sp.set_defaults(fn=fn)
        return sp

    d = add(
        "demo", "Generate an offline demo recipe and run it end to end (no network, no GPU needed).", cmd_demo
    )
    d.add_argument(
        "--recipe",
        default="arith",
        choices=["arith", "toy-mt"],
        help="arith: ReST-EM with a numeric verifier; toy-mt: ReST with the MiniLM learned reward (default arith)",
    )
    d.add_argument(
        "--small", action="store_true", help="a smaller budget (about a minute or two on 2 CPU cores)"
    )
    d.add_argument("--data-dir", default="data", help="where recipe data are written (default data/)")
    r = add("run", "Start a campaign from a TOML config (see README: 'Campaign config').", cmd_run)
    r.add_argument("config", help="path to campaign.toml")
    rs = add(
        "resume",
        "Continue a campaign from its last completed unit (after a crash, a kill or a stop).",
        cmd_resume,
    )
    rs.add_argument("id", help="campaign id (see `restgov status`)")
    rs.add_argument(
        "--override-gate",
        action="append",
        default=[],
        metavar="GATE",
        help="let a failing gate (reward_tests, drift, human) through once; logged with --actor",
    )
    rs.add_argument(
        "--actor", default=os.environ.get("USER", "cli"), help="who resumes (recorded in the event log)"
    )
    c = add(
        "criteria",
        "Show or change a campaign's stopping criteria and gates; every change is logged.",
        cmd_criteria,
    )
    c.add_argument("id", help="campaign id")
    c.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. stop.max_grow_steps=3, stop.target_reward=0.9, gates.drift=true, gates.action=stop; "
        "VALUE none removes an optional criterion",
    )
    c.add_argument("--actor", default=os.environ.get("USER", "cli"), help="who makes the change (recorded)")
    s = add("status", "Show campaigns, or one campaign's per-step table.", cmd_status)
    s.add_argument("id", nargs="?", help="campaign id; omit to list all")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    e = add("export", "Export a campaign's samples with sources, references and rewards.", cmd_export)
    e.add_argument("id", help="campaign id")
    e.add_argument(
        "--format", choices=["parquet", "jsonl"], default="parquet", help="output format (default parquet)"
    )
    e.add_argument("--out", help="output file (default ID-samples.FORMAT)")

    from reward_tests.cli import add_parser as add_reward_test

    from .governance_cli import add_parsers as add_governance_parsers
    from .refresh_cli import add_parser as add_reward_refresh

    add_reward_test(sub)
    add_governance_parsers(sub, DEFAULT_DB)
    add_reward_refresh(sub, DEFAULT_DB)

    from dashboard.cli import add_parsers as add_dashboard_parsers  # restgov dashboard, restgov users

    add_dashboard_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args) or 0


if __name__ == "__main__":
    sys.exit(main())
