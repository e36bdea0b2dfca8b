"""`restgov criteria|ratings|drift`: stopping criteria and gates, human ratings and drift statistics."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from .common import DEFAULT_DB, add_actor_argument, add_command, add_db_argument, open_store


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


def cmd_criteria(a: argparse.Namespace) -> int:
    import tomllib

    from ..campaign import update_criteria
    from ..config import ConfigError

    store = open_store(a.db)
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


def cmd_ratings_create(a: argparse.Namespace) -> int:
    store = open_store(a.db)
    _campaign(store, a.id)
    try:
        out = store.create_rating_tasks(a.id, a.a, a.b, a.n, a.required, a.seed, a.batch)
    except ValueError as e:
        sys.exit(f"error: {e}")
    if not out["n_tasks"]:
        print(f"no new tasks: every source sampled by both {a.a} and {a.b} already has one")
        return 0
    print(
        f"created {out['n_tasks']} rating tasks in batch {out['batch']} "
        f"({a.a} vs {a.b}, {a.required} ratings each)"
    )
    return 0


def cmd_ratings_stats(a: argparse.Namespace) -> int:
    store = open_store(a.db)
    _campaign(store, a.id)
    from ..ratings import rating_stats  # after the store opens: a bad --db is reported before scipy loads

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
            f"{o} vs {b}: mean {_f(r['mean'][o], 2)} vs {_f(r['mean'][b], 2)}, "
            f"human eval diff {r['diff']:+.3f} "
            f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}] "
            f"({r['confidence']:.0%} bootstrap, {r['n_tasks']} tasks); "
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
    from ..models import load_policy

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
    chat = bool(row["config"]["policy"].get("chat_template", False))
    return tuple(load_policy(paths[p], tmpl, chat_template=chat) for p in ("base", pol))


def cmd_drift(a: argparse.Namespace) -> int:
    from ..drift import DriftThresholds, drift_report, record_alarms, resolve_steps

    store = open_store(a.db)
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
            f"{name:<7} mean {_f(s['mean_a'])} -> {_f(s['mean_b'])}  "
            f"W1 {s['wasserstein']:.4g} = {_f(s['wasserstein_norm'])} "
            f"ref std  KS {s['ks_stat']:.3f} (p {s['ks_pvalue']:.3g}, {s['ks_n'][0]}+{s['ks_n'][1]} sampled)"
        )
    d = rep["diversity"]
    for m in ("distinct_1", "distinct_2", "unique_share"):
        print(f"{m:<13} {_f(d['a'][m])} -> {_f(d['b'][m])}")
    if rep["kl"]:
        kl = rep["kl"]
        print(f"KL from base  {kl['kl']:.3f} +/- {kl['stderr']:.3f} nats over {kl['n']} candidates")
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


def register(subparsers: Any, default_db: str = DEFAULT_DB) -> None:
    """Add `criteria`, `ratings` (create, stats) and `drift` to restgov's subcommands."""
    c = add_command(
        subparsers,
        "criteria",
        "Show or change a campaign's stopping criteria and gates; every change is logged.",
        cmd_criteria,
        default_db,
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
    add_actor_argument(c, "makes the change")

    r = subparsers.add_parser(
        "ratings",
        help="Human side-by-side ratings: build tasks, show statistics.",
        description="Human side-by-side ratings (0..6 per candidate, the paper's protocol).",
    )
    rsub = r.add_subparsers(dest="ratings_cmd", required=True, metavar="ACTION")
    h = "Build rating tasks from two policies' samples of the same sources."
    c = rsub.add_parser("create", help=h, description=h)
    add_db_argument(c, default_db)
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
    h = "Human eval diff with a bootstrap CI, Krippendorff's alpha, reward-human correlation."
    s = rsub.add_parser("stats", help=h, description=h)
    add_db_argument(s, default_db)
    s.add_argument("id", help="campaign id")
    s.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=cmd_ratings_stats)

    d = subparsers.add_parser(
        "drift",
        help="Drift between two Grow steps; exits 1 when an alarm fires.",
        description="Reward and length shift, diversity, KL from base and reward-human correlation "
        "between Grow a and Grow b. Exits 1 when an alarm fires.",
    )
    add_db_argument(d, default_db)
    d.add_argument("id", help="campaign id")
    d.add_argument(
        "--a",
        type=int,
        default=None,
        help="reference Grow step (default and 0: the BC baseline, the first Grow)",
    )
    d.add_argument("--b", type=int, default=None, help="Grow step under review (default: the latest)")
    d.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="also alarm on an undirected reward or length shift of W1 / reference std >= this (off by "
        "default: a reward rise is what ReST is for; the hacking checks always run)",
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
