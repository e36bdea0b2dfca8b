"""`restgov reward-refresh ID`: fine-tune a campaign's learned reward on its human ratings, store the result
as a new reward-model version, rerun its unit tests and print before/after figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import DEFAULT_DB, add_actor_argument, add_db_argument, check_output_dir, open_store

HELP = (
    "Refresh a campaign's learned reward (kind minilm) from its human ratings and switch the campaign to it; "
    "exits 1 if the new version fails its unit tests."
)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _print(res: dict) -> None:
    print(f"campaign {res['campaign']}: reward {res['parent_version']} -> {res['version']} ({res['name']})")
    print(f"new head: {res['path']}")
    no_ref = f", {res['n_without_reference']} without a reference" if res["n_without_reference"] else ""
    print(
        f"rated pairs: {res['n_pairs']} from {res['n_rated_tasks']} rated tasks "
        f"({res['n_ties_dropped']} ties dropped{no_ref}); "
        f"{res['n_train']} trained on, {res['n_heldout']} held out; "
        f"anchored on {res['n_anchor']} unrated samples"
    )
    print(f"pairwise accuracy (rated pairs): {_f(res['accuracy_before'])} -> {_f(res['accuracy_after'])}")
    if res["n_heldout"]:
        print(
            "pairwise accuracy (held out):    "
            f"{_f(res['heldout_accuracy_before'])} -> {_f(res['heldout_accuracy_after'])}"
        )
    print(
        f"mean reward change: {_f(res['mean_abs_shift'])} on rated texts, "
        f"{_f(res['anchor_mean_abs_shift'])} on anchors"
    )
    ut, parent = res["unit_tests"], res["parent_unit_tests"]
    if ut is None:
        print("unit tests of the new version: not run (the campaign has no validation references)")
    else:
        failed = f" (failed: {', '.join(ut['failed'])})" if ut["failed"] else ""
        print(
            f"unit tests of the new version: {ut['verdict'].upper()}{failed} on {ut['n_pairs']} validation "
            f"references, recorded as {ut['run_id']}"
        )
    if parent is not None:
        failed = f" (failed: {', '.join(parent['failed'])})" if parent["failed"] else ""
        print(f"unit tests of the parent: {parent['verdict'].upper()}{failed}, run {parent['run_id']}")
    if ut is not None and parent is not None:
        print(f"regressed: {', '.join(ut['regressed']) or 'none'}; fixed: {', '.join(ut['fixed']) or 'none'}")
    if res["config_updated"]:
        print("campaign config: reward.path now points at the new head; the next Grow scores with it")
    else:
        print("campaign config unchanged (--no-switch): the campaign keeps its current reward")


def cmd_reward_refresh(a: argparse.Namespace) -> int:
    train: dict[str, Any] = {
        k: v
        for k, v in (("epochs", a.epochs), ("lr", a.lr), ("anchor_weight", a.anchor_weight))
        if v is not None
    }
    if a.out:
        check_output_dir(a.out, "--out")
    store = open_store(a.db)  # before the imports below (torch): a bad --db is reported at once
    from ..rewards import RewardError
    from ..rewards.refresh import refresh_campaign_reward

    try:
        if store.campaign(a.id) is None:
            print(
                f"error: no campaign {a.id!r} in {store.path}; `restgov status --db {store.path}` lists them",
                file=sys.stderr,
            )
            return 2
        res = refresh_campaign_reward(
            store,
            a.id,
            a.out,
            actor=a.actor,
            apply=not a.no_switch,
            n_validation=a.n_validation,
            seed=a.seed,
            **train,
        )
    except (RewardError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    if a.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        _print(res)
    return 1 if res["unit_tests"] and res["unit_tests"]["verdict"] == "fail" else 0


def register(subparsers: Any, default_db: str = DEFAULT_DB) -> argparse.ArgumentParser:
    """Add `reward-refresh` to restgov's subcommands."""
    p = subparsers.add_parser(
        "reward-refresh",
        help=HELP,
        description=HELP + " The new head is registered in "
        "reward_models, unit-tested on up to --n-validation validation references, and logged as a "
        "'reward_refresh' event.",
    )
    p.add_argument("id", help="campaign id (its reward must be kind 'minilm')")
    p.add_argument(
        "--out",
        help="a new directory for the new head, not existing yet "
        "(default RUN_DIR/reward_heads/refresh-TIMESTAMP)",
    )
    add_db_argument(p, default_db)
    add_actor_argument(p, "refreshed it")
    p.add_argument(
        "--no-switch",
        action="store_true",
        help="register and unit-test the new version, but leave the campaign on its current reward",
    )
    p.add_argument("--epochs", type=int, help="passes over the rated pairs (default: at least 300 steps)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    p.add_argument(
        "--anchor-weight",
        type=float,
        help="weight of staying near the old rewards (default 0.5; 0.05 forgot that a dropped word is worse)",
    )
    p.add_argument("--seed", type=int, default=0, help="held-out split and batch order (default 0)")
    p.add_argument(
        "--n-validation", type=int, default=200, help="validation references to unit-test on (default 200)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_reward_refresh)
    return p
