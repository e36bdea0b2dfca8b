"""`restgov reward-test`: run the reward-model unit tests on a data file or a campaign's samples, print the
report, optionally record it in the store; exit 1 when a test fails (like a test runner), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from engine.cli.common import DEFAULT_DB, add_db_argument

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HELP = "Unit-test a reward model: perturb good outputs and check the reward moves the right way."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.config import REWARD_KINDS

    g = p.add_argument_group("reward (one of --reward or --reward-config)")
    g.add_argument(
        "--reward", metavar="KIND", choices=REWARD_KINDS, help=f"reward kind: {', '.join(REWARD_KINDS)}"
    )
    g.add_argument("--path", help="hf: model directory; minilm: trained head directory")
    g.add_argument("--function", help="callable: 'module:function'")
    g.add_argument("--batch-size", type=int, default=64, help="scoring batch size (default 64)")
    g.add_argument("--reward-config", metavar="TOML", help="use the [reward] table of a campaign config")
    d = p.add_argument_group("reference set (one of --data or --campaign)")
    d.add_argument(
        "--data",
        metavar="FILE",
        help="JSONL/CSV/Parquet with source and reference; references are the candidates",
    )
    d.add_argument(
        "--campaign", metavar="ID", help="draw samples of this campaign's latest Grow step from --db"
    )
    d.add_argument("--n", type=int, default=200, help="samples drawn with --campaign (default 200)")
    d.add_argument(
        "--min-reward",
        type=float,
        metavar="R",
        help="with --campaign, draw only samples the reward scored >= R (the ones a filter would keep)",
    )
    add_db_argument(
        d, None, help=f"DuckDB file to read --campaign from and record the run in (default {DEFAULT_DB})"
    )
    d.add_argument(
        "--store", action="store_true", help="record the run in --db (implied by --db and --campaign)"
    )
    t = p.add_argument_group("tests")
    t.add_argument(
        "--tests",
        action="append",
        default=[],
        metavar="MODULE_OR_PATH",
        help="extra user tests (@reward_test functions or a TESTS list); repeatable",
    )
    t.add_argument("--only", default="", help="comma-separated test names to run (default all)")
    t.add_argument("--skip", default="", help="comma-separated test names to leave out")
    t.add_argument(
        "--tol", type=float, default=1.0, help="scale every test's tolerance by this (default 1.0)"
    )
    t.add_argument(
        "--std", type=float, help="tolerance unit (default: the reward's std on the reference set, floored)"
    )
    t.add_argument(
        "--min-pass-rate", type=float, default=0.9, help="share of samples a test must pass (default 0.9)"
    )
    t.add_argument("--max-examples", type=int, help="at most this many perturbed samples per test")
    t.add_argument("--seed", type=int, default=0, help="seed of the perturbations and of the campaign draw")
    t.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `reward-test` to the `restgov` subcommands; the handler is set as `fn`, returning the exit code."""
    p = subparsers.add_parser("reward-test", help=HELP, description=HELP)
    add_arguments(p)
    p.set_defaults(fn=run)
    return p


class _InputError(Exception):
    pass


def _reward_config(a: argparse.Namespace):
    from engine.config import ConfigError, RewardConfig, load_config

    if bool(a.reward) == bool(a.reward_config):
        raise _InputError("give one of --reward KIND or --reward-config campaign.toml")
    try:
        if a.reward_config:
            return load_config(a.reward_config).reward
        return RewardConfig(kind=a.reward, path=a.path, function=a.function, batch_size=a.batch_size)
    except ConfigError as e:
        raise _InputError(str(e)) from e


def _reward(cfg):
    from engine.rewards import RewardError, load_reward

    try:
        return load_reward(cfg)
    except (RewardError, FileNotFoundError) as e:
        raise _InputError(str(e)) from e


def _store(db: str):
    """The store to read --campaign from and record the run in: a missing file is created in an existing
    folder (as `restgov users add` does), a missing folder is refused."""
    from pathlib import Path

    from engine.store import StoreError, open_store

    try:
        return open_store(db, create=Path(db).resolve().parent.is_dir())
    except StoreError as e:
        raise _InputError(str(e)) from e


def _pairs(a: argparse.Namespace, store) -> list[tuple[str, str, str, str | None]]:
    from engine.data import DataError, load_examples

    if bool(a.data) == bool(a.campaign):
        raise _InputError("give one of --data FILE or --campaign ID")
    if a.data:
        try:
            exs = load_examples(a.data)
        except DataError as e:  # one problem names the file itself; several are listed below it
            raise _InputError(str(e) if len(e.problems) == 1 else f"in {a.data}:\n{e}") from e
        # The references are the set of good outputs: every perturbation starts from one.
        return [(ex.id, ex.source, ex.reference, ex.reference) for ex in exs]
    if store.campaign(a.campaign) is None:
        raise _InputError(f"no campaign {a.campaign!r} in {store.path}")
    pairs = store.reward_test_pairs(a.campaign, a.n, a.seed, a.min_reward)
    if not pairs:
        at_least = f" with reward >= {a.min_reward}" if a.min_reward is not None else ""
        raise _InputError(f"campaign {a.campaign!r} has no generated samples{at_least} yet")
    return pairs


def _tests(a: argparse.Namespace, cfg):
    """The reward's suite (its config's own tests, then --tests), narrowed by --only / --skip; an unknown
    test name is an input error."""
    from .suite import TestDiscoveryError, for_reward

    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    try:
        return for_reward(cfg, extra=a.tests, only=split(a.only), skip=split(a.skip))
    except TestDiscoveryError as e:
        raise _InputError(str(e)) from e


def run(a: argparse.Namespace) -> int:
    """The command's body: 0 when every test passes, 1 when one fails, 2 when the input is unusable."""
    from engine.rewards import RewardError

    from .report import render, to_dict
    from .runner import RewardTestError, run_suite

    store = None
    try:
        if a.n < 1 or (a.max_examples is not None and a.max_examples < 1):
            raise _InputError("--n and --max-examples must be >= 1")
        cfg = _reward_config(a)
        tests = _tests(a, cfg)  # before the reward loads: a typo in a test name should fail fast
        reward = _reward(cfg)
        if a.db or a.store or a.campaign:
            store = _store(a.db or DEFAULT_DB)
        pairs = _pairs(a, store)
        try:
            report = run_suite(
                reward,
                pairs,
                tests,
                seed=a.seed,
                tol_scale=a.tol,
                min_pass_rate=a.min_pass_rate,
                max_examples_per_test=a.max_examples,
                std=a.std,
            )
        except (ValueError, RewardError, RewardTestError) as e:
            raise _InputError(str(e)) from e
        report.config |= {
            "reward": {"kind": cfg.kind, "path": cfg.path, "function": cfg.function},
            "data": a.data,
            "campaign": a.campaign,
            "user_tests": a.tests,
        }
        run_id = None
        if store is not None:
            store.add_reward_model(reward.version or "", reward.name, cfg.kind, cfg.path or cfg.function)
            run_id = store.save_reward_test_run(report)
        if a.json:
            print(json.dumps(to_dict(report) | {"run_id": run_id}, indent=2, default=str, ensure_ascii=False))
        else:
            render(report)
            if run_id:
                print(f"recorded as {run_id} in {store.path}")
        return 0 if report.verdict == "pass" else 1
    except _InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if store is not None:
            store.close()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="restgov reward-test", description=HELP)
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """`restgov reward-test ARGS` in-process: main(["--reward", "chrf", "--data", "refs.jsonl"])."""
    from engine.cli.common import run_command

    return run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
