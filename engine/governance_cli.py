"""`restgov ratings create|stats` and `restgov drift`: human ratings and drift statistics from the terminal.

`add_parsers(sub, default_db)` registers them on the main parser's subcommands (engine/cli.py).
"""

from __future__ import annotations

import argparse
import json
import math
import sys


def _store(db: str):
    from .cli import _open_store  # lazy: engine.cli imports this module while building its parser

    return _open_store(db)


def _campaign(store, cid: str) -> dict:
    row = store.campaign(cid)
    if row is None:
        sys.exit(f"error: no campaign {cid!r} in {store.path}; `restgov status --db {store.path}` lists them")
    return row


def _f(x, p: int = 3) -> str:
    return (
        "-"
        if x is None or (isinstance(x, float) and math.isnan(x))
        else f"{x:.{p}f}"
        if isinstance(x, float)
        else str(x)
    )


def cmd_ratings_create(a) -> int:
    store = _store(a.db)
    _campaign(store, a.id)
    try:
        out = store.create_rating_tasks(a.id, a.a, a.b, a.n, a.required, a.seed, a.batch)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if not out["n_tasks"]:
        print(f"no new tasks: every source sampled by both {a.a} and {a.b} already has one")
        return 0
    print(
        f"created {out['n_tasks']} rating tasks in batch {out['batch']} ({a.a} vs {a.b}, {a.required} ratings each)"
    )
    return 0


def cmd_ratings_stats(a) -> int:
    from .ratings import rating_stats

    store = _store(a.db)
    _campaign(store, a.id)
    st = rating_stats(store, a.id, seed=a.seed)
    if a.json:
        print(json.dumps(st, indent=2, default=str))
        return 0
    p = st["progress"]
    print(
        f"tasks {p['tasks']}: complete {p['complete']}, partial {p['partial']}, unrated {p['unrated']}; "
        f"{p['ratings']} ratings by {p['annotators']} annotators"
    )
    for r in st["pairs"]:
        b, o = r["baseline"], r["other"]
        print(
            f"{o} vs {b}: mean {_f(r['mean'][o], 2)} vs {_f(r['mean'][b], 2)}, human eval diff {r['diff']:+.3f} "
            f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}] ({r['confidence']:.0%} bootstrap, {r['n_tasks']} tasks); "
            f"win/tie/loss {r['win']:.0%}/{r['tie']:.0%}/{r['loss']:.0%}; preferred: {r['preferred']}"
        )
    ag = st["agreement"]
    print(
        f"agreement: Krippendorff alpha (interval) {_f(ag['alpha'])} = {ag['label']} "
        f"({ag['pairable_units']} candidates rated by >= 2 of {ag['annotators']} annotators)"
    )
    for c in st["correlation"]:
        print(
            f"grow {c['grow']}: reward vs human over {c['n']} texts: Spearman {_f(c['spearman_rho'])} "
            f"(p {_f(c['spearman_p'], 4)}), Kendall {_f(c['kendall_tau'])} (p {_f(c['kendall_p'], 4)})"
        )
    return 0


def _policies(store, cid: str, grow: int, n: int):
    """Load the BC policy and the policy that sampled `grow` for the KL estimate (None, None without --kl)."""
    if not n:
        return None, None
    from .models import load_policy

    row = _campaign(store, cid)
    paths = {c["policy"]: c["path"] for c in store.checkpoints(cid)}
    pols = store.step_summary(cid, grow)["policies"]
    if len(pols) != 1:
        sys.exit(f"error: grow {grow} was sampled by {pols}, not one policy: cannot pick one for --kl")
    pol = pols[0]
    missing = [p for p in ("base", pol) if p not in paths]
    if missing:
        sys.exit(f"error: --kl needs the checkpoints {missing} of campaign {cid}; recorded: {sorted(paths)}")
    tmpl = row["config"]["policy"]["prompt_template"]
    return load_policy(paths["base"], tmpl), load_policy(paths[pol], tmpl)


def cmd_drift(a) -> int:
    from .drift import DriftThresholds, drift_report, record_alarms, resolve_steps

    store = _store(a.db)
    _campaign(store, a.id)
    try:
        ga, gb = resolve_steps(store, a.id, a.a, a.b)
        th = DriftThresholds(
            reward_wasserstein=a.threshold, length_wasserstein=a.threshold, kl=a.kl_threshold
        )
        base, current = _policies(store, a.id, gb, a.kl)
        rep = drift_report(store, a.id, ga, gb, th, base=base, current=current, kl_samples=a.kl)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if a.record:
        record_alarms(store, a.id, rep, actor="cli")
    if a.json:
        print(json.dumps(rep, indent=2, default=str))
        return 1 if rep["alarms"] else 0
    print(
        f"campaign {a.id}: grow {ga} (n {rep['steps']['a']['n']}) -> grow {gb} (n {rep['steps']['b']['n']})"
    )
    for name in ("reward", "length"):
        s = rep[name]
        print(
            f"{name:<7} mean {_f(s['mean_a'])} -> {_f(s['mean_b'])}  W1 {s['wasserstein']:.4g} = {_f(s['wasserstein_norm'])} "
            f"ref std  KS {s['ks_stat']:.3f} (p {s['ks_pvalue']:.3g}, {s['ks_n'][0]}+{s['ks_n'][1]} sampled)"
        )
    d = rep["diversity"]
    for m in ("distinct_1", "distinct_2", "unique_share"):
        print(f"{m:<13} {_f(d['a'][m])} -> {_f(d['b'][m])}")
    if rep["kl"]:
        print(
            f"KL from base  {rep['kl']['kl']:.3f} +/- {rep['kl']['stderr']:.3f} nats over {rep['kl']['n']} candidates"
        )
    for c in rep["human"]:
        print(f"grow {c['grow']}: reward vs human Spearman {_f(c['spearman_rho'])} over {c['n']} rated texts")
    for al in rep["alarms"]:
        print(f"ALARM {al['metric']}: {al['message']}")
    print(
        "no alarms"
        if not rep["alarms"]
        else f"{len(rep['alarms'])} alarm(s)" + ("" if a.record else "; --record logs them")
    )
    return 1 if rep["alarms"] else 0


def add_parsers(sub, default_db: str) -> None:
    """Register `ratings` (create, stats) and `drift` on the main parser's subcommands."""

    def db(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", default=default_db, help=f"DuckDB file (default {default_db}; env RESTGOV_DB)")

    r = sub.add_parser(
        "ratings",
        help="Human side-by-side ratings: build tasks, show statistics.",
        description="Human side-by-side ratings (0..6 per candidate, the paper's protocol).",
    )
    rsub = r.add_subparsers(dest="ratings_cmd", required=True, metavar="ACTION")
    c = rsub.add_parser("create", help="Build rating tasks from two policies' samples of the same sources.")
    db(c)
    c.add_argument("id", help="campaign id")
    c.add_argument(
        "--a", required=True, help='baseline policy: a checkpoint id ("base", "g1-i2") or "reference"'
    )
    c.add_argument("--b", required=True, help="policy under review (checkpoint id)")
    c.add_argument("--n", type=int, default=50, help="tasks to add, one per source (default 50)")
    c.add_argument(
        "--required",
        type=int,
        default=3,
        help="distinct annotators per task before it is complete (default 3)",
    )
    c.add_argument("--seed", type=int, default=0, help="picks sources and samples (default 0)")
    c.add_argument("--batch", help="batch name (default b1, b2, ...)")
    c.set_defaults(fn=cmd_ratings_create)
    s = rsub.add_parser(
        "stats", help="Human eval diff with a bootstrap CI, Krippendorff's alpha, reward-human correlation."
    )
    db(s)
    s.add_argument("id", help="campaign id")
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=cmd_ratings_stats)

    d = sub.add_parser(
        "drift",
        help="Drift between two Grow steps; exits 1 when an alarm fires.",
        description="Reward and length shift, diversity, KL from base and reward-human correlation "
        "between Grow a and Grow b. Exits 1 when an alarm fires.",
    )
    db(d)
    d.add_argument("id", help="campaign id")
    d.add_argument(
        "--a",
        type=int,
        default=None,
        help="reference Grow step (default and 0: the BC baseline, the first Grow)",
    )
    d.add_argument("--b", type=int, default=None, help="Grow step under review (default: the latest)")
    d.add_argument(
        "--threshold", type=float, default=0.1, help="alarm at W1 / reference std >= this (default 0.1)"
    )
    d.add_argument(
        "--kl",
        type=int,
        default=0,
        metavar="N",
        help="estimate KL from base on N candidates (loads two checkpoints)",
    )
    d.add_argument(
        "--kl-threshold", type=float, default=None, help="alarm when the KL estimate (nats) reaches this"
    )
    d.add_argument(
        "--record", action="store_true", help='append each alarm to the events table as kind "drift_alarm"'
    )
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.set_defaults(fn=cmd_drift)
