"""`restgov demo|run|resume|status|export`: start, continue, inspect and export campaigns.

The process that runs a command owns the database for its duration; compute runs in worker subprocesses
with progress bars here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import (
    DEFAULT_DB,
    add_actor_argument,
    add_command,
    check_input_file,
    check_output_dir,
    check_output_file,
    open_store,
)


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


def _drive(
    store, cid: str, override_gates: tuple[str, ...] = (), actor: str = "cli", reopen: bool = False
) -> int:
    from ..campaign import CampaignStopped, Controller

    bars = _Bars()
    ctl = Controller(store, on_event=bars)
    print(f"campaign {cid}  (db {store.path})")
    try:
        with bars.progress:
            state = ctl.run(cid, override_gates=override_gates, actor=actor, reopen=reopen)
    except CampaignStopped as e:
        sys.exit(f"error: {e}: restgov resume {cid} --reopen")
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
    """Per Improve step and per Grow: reward, audit metrics, mean length and what the gates said."""
    from rich.console import Console
    from rich.table import Table

    from ..report import campaign_status

    st = campaign_status(store, cid)
    f = lambda x, p=4: "" if x is None else (f"{x:.{p}f}" if isinstance(x, float) else str(x))  # noqa: E731
    metrics = sorted({m for s in st["steps"] for m in (s.get("val_audit") or {})})
    t = Table(title=f"{st['id']}  mode={st['mode']}  state={st['state']}")
    cols = ["grow", "improve", "policy", "rule", "tau/param", "kept", "kept mean reward", "val reward"]
    cols += [f"val {m}" for m in metrics] + ["val tokens", "gate"]
    for col in cols:
        t.add_column(col, justify="right")
    for s in st["steps"]:
        param = s["tau"] if s["tau"] is not None else s["param"]
        audit = [f((s.get("val_audit") or {}).get(m)) for m in metrics]
        t.add_row(
            str(s["grow"]),
            str(s["improve"]),
            s["policy"],
            s["rule"],
            f(param, 3),
            f(s["kept"]),
            f(s["kept_mean_reward"]),
            f(s["val_reward"]),
            *audit,
            f(s.get("val_tokens"), 1),
            s.get("gate") or "",
        )
    con = Console()
    con.print(t)
    if st["grows"]:
        gt = Table(title="Grow steps (generated candidates)")
        gmetrics = sorted({m for g in st["grows"].values() for m in g["audit"]})
        for col in ["grow", "sampled by", "samples", "mean reward", *gmetrics, "mean tokens", "gates after"]:
            gt.add_column(col, justify="right")
        for g, row in st["grows"].items():
            gates = ", ".join(f"{c['gate']} {c['status']}" for c in row["gates"]) or ""
            gt.add_row(
                str(g),
                row["policy"] or "",
                str(row["n_generated"]),
                f(row["generated_mean_reward"]),
                *[f(row["audit"].get(m)) for m in gmetrics],
                f(row["mean_tokens"], 1),
                gates,
            )
        con.print(gt)
    for c in st["gate_checks"]:
        if c["status"] != "pass":
            con.print(f"gate {c['gate']} {c['status']} ({c['stage']} {c['grow'] or ''}): {c['message']}")
    if st["stop_reason"]:
        con.print(f"stop reason: {st['stop_reason']}")
    fin = st["final"]
    if fin.get("policy"):
        con.print(f"final policy: {fin['policy']} ({fin['why']})")
    for pol, v in fin["mean_reward"].items():
        bon = "  ".join(f"N={n}: {x:.4f}" for n, x in sorted(fin["best_of_n"].get(pol, {}).items()))
        audit = "  ".join(f"{m} {x:.4f}" for m, x in sorted(fin["audit"].get(pol, {}).items()))
        con.print(f"{fin['split']} reward  {pol:<8} {v:.4f}   {audit}   best-of-N  {bon}")


def cmd_demo(a: argparse.Namespace) -> int:
    from ..recipes import PREFLIGHT_REWARD_TESTS, prepare

    # A bad --data-dir or --db is reported before the recipe's data are written.
    check_output_dir(a.data_dir, "--data-dir", new=False)
    open_store(a.db, create=True).close()
    cfg_path = prepare(a.recipe, Path(a.data_dir) / "recipes", small=a.small)
    print(f"recipe {a.recipe}: data and config in {cfg_path.parent}")
    a.config = str(cfg_path)
    return cmd_run(a, preflight=a.recipe in PREFLIGHT_REWARD_TESTS)


def _preflight(store, cid: str, cfg) -> None:
    """Run the reward's unit tests on the campaign's validation references before anything trains, and
    say what they found; the campaign then runs with its gates on, to show what they catch."""
    from ..steps.reward_tests import run_outside_campaign, validation_pairs

    row = store.campaign(cid)
    run_dir = Path(row["run_dir"])
    print("reward unit tests on the validation references (before the campaign runs) ...")
    pairs = validation_pairs(run_dir, cfg.eval.max_sources)
    rep = run_outside_campaign(
        store, cfg, pairs, run_dir / "steps" / "preflight-reward-tests", cid=cid, actor="demo"
    )
    for t in rep["tests"]:
        if t["verdict"] == "fail":
            print(
                f"  FAIL {t['name']:<20} reward moved {t['mean_delta']:+.4f} on average "
                f"(expected: {t['expectation']}); pass rate {t['pass_rate']:.2f}"
            )
    verdict = "FAILS" if rep["failed"] else "passes"
    print(f"reward {rep['reward_version']} {verdict} its unit tests (run {rep['run_id']}).")
    if rep["failed"]:
        print("proceeding anyway, with the governance gates on, to show what a campaign on this reward does.")


def cmd_run(a: argparse.Namespace, preflight: bool = False) -> int:
    from ..campaign import new_campaign
    from ..config import ConfigError, load_config
    from ..data import DataError

    check_input_file(a.config, "CONFIG")
    try:
        cfg = load_config(a.config)
    except ConfigError as e:
        sys.exit(f"error in {a.config}: {e}")
    store = open_store(a.db, create=True)
    try:
        cid = new_campaign(store, cfg, Path(a.db).resolve().parent / "runs")
    except DataError as e:
        sys.exit(f"error in the data of {a.config}:\n{e}")
    except ConfigError as e:
        sys.exit(f"error in {a.config}: {e}")
    if preflight:
        _preflight(store, cid, cfg)
    return _drive(store, cid)


def cmd_resume(a: argparse.Namespace) -> int:
    store = open_store(a.db)
    row = store.campaign(a.id)
    if row is None:
        sys.exit(f"error: no campaign {a.id!r} in {a.db}; `restgov status --db {a.db}` lists them")
    store.add_event(a.id, "resume", "resumed from the command line", actor=a.actor)
    return _drive(store, a.id, tuple(a.override_gate), a.actor, reopen=a.reopen)


def cmd_status(a: argparse.Namespace) -> int:
    from ..report import campaign_status

    store = open_store(a.db)
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


def cmd_export(a: argparse.Namespace) -> int:
    out = a.out or f"{a.id}-samples.{a.format}"
    check_output_file(out, "--out", f"{a.id}-samples.{a.format}")
    store = open_store(a.db)
    if store.campaign(a.id) is None:
        sys.exit(f"error: no campaign {a.id!r} in {a.db}")
    n = store.export_samples(a.id, out, a.format)
    print(f"wrote {n} samples to {out}")
    from ..report import campaign_status

    st = campaign_status(store, a.id)
    gov = Path(out).with_name(Path(out).stem + ".governance.json")
    keys = ("id", "state", "stop_reason", "final", "flagged", "gate_checks", "steps", "grows")
    gov.write_text(json.dumps({k: st[k] for k in keys}, indent=2, default=str))
    fin = st["final"]
    if fin.get("policy"):
        print(f"final policy {fin['policy']}: {fin['why']}")
    print(f"wrote the governance record (final policy, gate checks, per-step audit figures) to {gov}")
    return 0


def register(subparsers: Any, default_db: str = DEFAULT_DB) -> None:
    """Add demo, run, resume, status and export to restgov's subcommands."""

    def add(name: str, help: str, fn) -> argparse.ArgumentParser:
        return add_command(subparsers, name, help, fn, default_db)

    d = add(
        "demo", "Generate an offline demo recipe and run it end to end (no network, no GPU needed).", cmd_demo
    )
    d.add_argument(
        "--recipe",
        default="arith",
        choices=["arith", "toy-mt", "reward-hack"],
        help="arith: ReST-EM with a numeric verifier; toy-mt: ReST with the MiniLM learned reward; "
        "reward-hack: toy-mt with a learned reward that pays for length (default arith)",
    )
    d.add_argument(
        "--small", action="store_true", help="a smaller budget (about a minute or two on 2 CPU cores)"
    )
    d.add_argument(
        "--data-dir", default="data", help="where recipe data are written, under recipes/NAME (default data/)"
    )
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
        help="let a failing gate (audit, drift, reward_tests, human) through once; logged with --actor",
    )
    add_actor_argument(rs, "resumes")
    rs.add_argument(
        "--reopen",
        action="store_true",
        help="run a campaign an operator STOPPED again (a stop is final unless reopened)",
    )
    s = add("status", "Show campaigns, or one campaign's per-step table.", cmd_status)
    s.add_argument("id", nargs="?", help="campaign id; omit to list all")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    e = add("export", "Export a campaign's samples with sources, references and rewards.", cmd_export)
    e.add_argument("id", help="campaign id")
    e.add_argument(
        "--format", choices=["parquet", "jsonl"], default="parquet", help="output format (default parquet)"
    )
    e.add_argument(
        "--out",
        help="output file in an existing folder (default ID-samples.FORMAT here); the governance record is "
        "written beside it as NAME.governance.json",
    )
