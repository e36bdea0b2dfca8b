"""Refresh a learned reward from human ratings (the paper's remedy for reward drift): fine-tune a copy of a
MiniLM head on rated pairs with a Bradley-Terry loss, save it as a new version, rerun its unit tests.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .base import RewardError, batches
from .minilm import MiniLMReward, _save_head, build_features

LEARNED_KINDS = ("minilm",)  # providers whose weights this module can fine-tune


class RatedPair(NamedTuple):
    source: str
    preferred: str
    other: str
    reference: str | None
    margin: float  # mean human score of `preferred` minus that of `other`, on the 0..6 scale (> 0)


def rated_pairs(
    tasks: list[dict], ratings: list[dict], references: dict[str, str] | None = None
) -> list[RatedPair]:
    """One pair per rated task whose annotators' mean scores differ (ties and identical texts are dropped).

    `tasks` and `ratings` are rows of Store.rating_tasks(cid) and Store.ratings(cid); `references` maps
    source_id to the reference (None: pairs carry no reference).
    """
    scores: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for r in ratings:
        scores[r["task_id"]].append((r["score_a"], r["score_b"]))
    out = []
    for t in tasks:
        s = scores.get(t["task_id"])
        if not s or t["text_a"] == t["text_b"]:
            continue
        ma, mb = sum(x for x, _ in s) / len(s), sum(y for _, y in s) / len(s)
        if ma == mb:
            continue
        pref, other = (t["text_a"], t["text_b"]) if ma > mb else (t["text_b"], t["text_a"])
        ref = references.get(t["source_id"]) if references is not None else None
        out.append(RatedPair(t["source"], pref, other, ref or None, abs(ma - mb)))
    return out


def _accuracy(rp: torch.Tensor, ro: torch.Tensor) -> float | None:
    """Share of pairs the reward orders like the raters (an exact tie counts half); None for no pairs."""
    return float(((rp > ro).float() + 0.5 * (rp == ro).float()).mean()) if len(rp) else None


def refresh_minilm_head(
    head_dir: str | Path,
    pairs: list[tuple[str, str, str, str | None, float]],
    out_dir: str | Path,
    epochs: int | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    anchor_weight: float = 0.5,
    temperature: float = 0.1,
    batch_size: int = 32,
    anchor: list[tuple[str, str, str | None]] | None = None,
    device: str | None = None,
) -> Path:
    """Fine-tune a copy of the head at `head_dir` on (source, preferred, other, reference, margin) pairs.

    Loss per pair: margin-weighted -log sigmoid((r_pref - r_other) / temperature), plus anchor_weight times
    the mean squared change (in temperature units) of the rewards of the same texts against the old head, and
    of `anchor` (source, candidate, reference) texts when given (unrated outputs of the latest policy: what
    the head must not forget). 20% of the pairs are held out when there are >= 10. epochs=None runs at least
    300 Adam steps. Same inputs and seed give the same head.
    """
    src, out = Path(head_dir), Path(out_dir)
    if out.resolve() == src.resolve():
        raise RewardError(
            f"refresh would overwrite its parent {src}: give a new out_dir (each refresh is a new version)"
        )
    if temperature <= 0 or lr <= 0 or anchor_weight < 0 or batch_size < 1:
        raise RewardError(
            f"refresh: need temperature > 0, lr > 0, anchor_weight >= 0, batch_size >= 1, got "
            f"{temperature}, {lr}, {anchor_weight}, {batch_size}"
        )
    old = MiniLMReward(src, device=device)
    ps = [RatedPair(*p) for p in pairs]
    if len(ps) < 2:
        raise RewardError(f"refresh needs at least 2 rated pairs with a preference, got {len(ps)}")
    if any(not p.margin > 0 or not math.isfinite(p.margin) for p in ps):
        raise RewardError("refresh: every pair needs a finite margin > 0 (the preferred text's score lead)")
    if old.needs_reference and any(not p.reference for p in ps):
        raise RewardError(
            f"head {src} compares with references, but {sum(not p.reference for p in ps)} pairs have none"
        )
    others = [(p.reference if old.needs_reference else p.source) or "" for p in ps]
    feats = lambda c, x: build_features(old.encoder.encode(c), old.encoder.encode(x), c, x)  # noqa: E731
    fp, fo = feats([p.preferred for p in ps], others), feats([p.other for p in ps], others)
    anc = [a for a in anchor or [] if a[2] or not old.needs_reference]
    fa = feats([a[1] for a in anc], [(a[2] if old.needs_reference else a[0]) or "" for a in anc])
    weight = torch.tensor([p.margin for p in ps], dtype=torch.float32)
    weight = weight / weight.mean()  # a clear preference counts more than a split vote

    n = len(ps)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_held = round(0.2 * n) if n >= 10 else 0
    held, train = perm[:n_held], perm[n_held:]
    base_head = old.head.eval()
    with torch.no_grad():
        ap, ao, aa = base_head(fp), base_head(fo), base_head(fa)
    head = copy.deepcopy(base_head).train()
    steps_per_epoch = math.ceil(len(train) / batch_size)
    epochs = epochs if epochs is not None else max(1, math.ceil(300 / steps_per_epoch))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    loss_v = float("nan")
    for _ in range(epochs):
        order = train[torch.randperm(len(train), generator=gen)]
        for sl in batches(len(order), batch_size):
            idx = order[sl]
            rp, ro = head(fp[idx]), head(fo[idx])
            bt = (weight[idx] * -nn.functional.logsigmoid((rp - ro) / temperature)).mean()
            dev = [rp - ap[idx], ro - ao[idx]]
            if len(anc):
                j = torch.randint(len(anc), (batch_size,), generator=gen)
                dev.append(head(fa[j]) - aa[j])
            keep = ((torch.cat(dev) / temperature) ** 2).mean()
            loss = bt + anchor_weight * keep
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_v = float(loss.detach())
    head.eval()
    with torch.no_grad():
        np_, no = head(fp), head(fo)
        shift_a = (head(fa) - aa).abs() if len(anc) else None
    shift = torch.cat([np_ - ap, no - ao]).abs()
    stats: dict[str, Any] = {
        "method": "pairwise_bradley_terry",
        "n_pairs": n,
        "n_train": len(train),
        "n_heldout": n_held,
        "epochs": epochs,
        "steps": epochs * steps_per_epoch,
        "lr": lr,
        "seed": seed,
        "temperature": temperature,
        "anchor_weight": anchor_weight,
        "batch_size": batch_size,
        "final_loss": loss_v,
        "accuracy_before": _accuracy(ap, ao),
        "accuracy_after": _accuracy(np_, no),
        "train_accuracy_before": _accuracy(ap[train], ao[train]),
        "train_accuracy_after": _accuracy(np_[train], no[train]),
        "heldout_accuracy_before": _accuracy(ap[held], ao[held]) if n_held else None,
        "heldout_accuracy_after": _accuracy(np_[held], no[held]) if n_held else None,
        "mean_abs_shift": float(shift.mean()),
        "max_abs_shift": float(shift.max()),
        "n_anchor": len(anc),
        "anchor_mean_abs_shift": float(shift_a.mean()) if shift_a is not None else None,
    }
    # No paths in head.json: the version (a content hash) must not depend on where the parent lives.
    meta = old.meta | {"stats": stats, "parent_version": old.version, "parent_stats": old.meta.get("stats")}
    return _save_head(head, meta, out)


def campaign_prompts(row: dict, split: str, limit: int | None = None) -> list[tuple[str, str, str]]:
    """(source_id, source, reference) of a campaign split, in file order, from the copy new_campaign wrote to
    RUN_DIR/inputs/SPLIT.parquet: the rows the prompts table holds and the files the workers read."""
    import pyarrow.parquet as pq

    path = Path(row["run_dir"]) / "inputs" / f"{split}.parquet"
    if not path.is_file():
        raise RewardError(f"{path} is missing: campaign {row['id']}'s copy of its {split} split")
    t = pq.read_table(path, columns=["source_id", "source", "reference"]).slice(0, limit).to_pylist()
    return [(r["source_id"], r["source"], r["reference"] or "") for r in t]


def _unit_tests(
    reward: MiniLMReward, cfg: Any, store: Any, row: dict, limit: int, **extra: Any
) -> dict | None:
    """Run and store, in a worker, the suite the reward-tests gate runs (engine/steps/reward_tests.py) on up
    to `limit` validation references, so the gate reads this run for this version; None without references."""
    import uuid

    from engine.steps.reward_tests import run_outside_campaign

    pairs = [
        (i, s, r, r)
        for i, s, r in campaign_prompts(row, "validation", min(limit, cfg.eval.max_sources or limit))
        if r
    ]
    if not pairs:
        return None
    path = str(reward.path.resolve())
    step_dir = Path(row["run_dir"]) / "steps" / f"reward-tests-{reward.version}-{uuid.uuid4().hex[:6]}"
    rep = run_outside_campaign(
        store,
        cfg,
        pairs,
        step_dir,
        reward={"kind": cfg.reward.kind, "path": path},
        report_extra={"reward": {"kind": cfg.reward.kind, "path": path}, "campaign": row["id"]} | extra,
    )
    return {
        "run_id": rep["run_id"],
        "verdict": rep["verdict"],
        "failed": rep["failed"],
        "n_pairs": rep["n_pairs"],
    }


def refresh_campaign_reward(
    store: Any,
    cid: str,
    out_dir: str | Path | None = None,
    actor: str = "cli",
    apply: bool = True,
    n_validation: int = 200,
    n_anchor: int = 500,
    **train: Any,
) -> dict:
    """Refresh campaign `cid`'s learned reward on its human ratings; register, unit-test and log the new
    version.

    Up to `n_anchor` samples of the latest Grow step anchor the head (see refresh_minilm_head; `train` goes
    there too). The parent is unit-tested too when it never was, to name the tests that regressed. With
    `apply`, the campaign's reward.path is switched to the new head, so the next Grow scores with it.
    Returns the figures (the payload of a "reward_refresh" event) plus `config`, the new config.
    """
    from engine.config import config_from_dict, config_to_dict
    from engine.store import now

    row = store.campaign(cid)
    if row is None:
        raise KeyError(f"no campaign {cid!r} in {store.path}")
    rc = (cfg := config_from_dict(row["config"])).reward
    if rc.kind not in LEARNED_KINDS:
        raise RewardError(
            f"campaign {cid} uses reward kind {rc.kind!r}: only learned reward providers "
            f"(kind {', '.join(map(repr, LEARNED_KINDS))}) can be refreshed from human ratings"
        )
    if apply and (busy := [x["step_key"] for x in store.steps(cid) if x["status"] != "done"]):
        raise RewardError(
            f"campaign {cid} has unfinished steps {busy}: switching the reward now would score one "
            "step with two versions; let them finish (or refresh without switching)"
        )
    old = MiniLMReward(rc.path, rc.batch_size)
    refs = {sid: ref for sid, _, ref in campaign_prompts(row, "train")} if old.needs_reference else None
    ratings = store.ratings(cid)
    found = rated_pairs(store.rating_tasks(cid), ratings, refs)
    pairs = [p for p in found if p.reference or not old.needs_reference]
    n_rated = len({r["task_id"] for r in ratings})
    if len(pairs) < 2:
        raise RewardError(
            f"campaign {cid} has {len(pairs)} rated pairs with a preference ({n_rated} rated tasks): "
            "need at least 2; `restgov ratings create` builds tasks to rate"
        )
    out = Path(out_dir or Path(row["run_dir"]) / "reward_heads" / f"refresh-{now():%Y%m%d-%H%M%S}")
    if out.exists():
        raise RewardError(f"{out} already exists: a refresh writes a new head directory")
    anchor = (
        [(src, text, ref) for _, src, text, ref in store.reward_test_pairs(cid, n_anchor)] if n_anchor else []
    )
    new_dir = refresh_minilm_head(rc.path, pairs, out, anchor=anchor, **train).resolve()
    new = MiniLMReward(new_dir, rc.batch_size)
    st = new.meta["stats"]
    store.add_reward_model(new.version, new.name, rc.kind, str(new_dir))
    prev = store.latest_reward_test_run(old.version)
    parent = (
        {
            "run_id": prev["run_id"],
            "verdict": prev["verdict"],
            "failed": [r["test"] for r in store.reward_test_results(prev["run_id"]) if r["passed"] is False],
        }
        if prev
        else _unit_tests(old, cfg, store, row, n_validation)
    )
    tested = _unit_tests(new, cfg, store, row, n_validation, refresh_of=old.version)
    if tested and parent:
        tested |= {
            "regressed": sorted(set(tested["failed"]) - set(parent["failed"])),
            "fixed": sorted(set(parent["failed"]) - set(tested["failed"])),
        }
    keys = (
        "accuracy_before",
        "accuracy_after",
        "heldout_accuracy_before",
        "heldout_accuracy_after",
        "n_train",
        "n_heldout",
        "mean_abs_shift",
        "n_anchor",
        "anchor_mean_abs_shift",
        "steps",
    )
    figures = {
        "campaign": cid,
        "parent_version": old.version,
        "parent_path": str(Path(rc.path).resolve()),
        "version": new.version,
        "name": new.name,
        "path": str(new_dir),
        "config_updated": apply,
        "n_rated_tasks": n_rated,
        "n_pairs": len(pairs),
        "n_ties_dropped": n_rated - len(found),
        "n_without_reference": len(found) - len(pairs),
        **{k: st[k] for k in keys},
        "unit_tests": tested,
        "parent_unit_tests": parent,
    }
    held = (
        f", held-out {st['heldout_accuracy_before']:.2f} -> {st['heldout_accuracy_after']:.2f}"
        if st["n_heldout"]
        else ""
    )
    msg = (
        f"reward refreshed on {len(pairs)} rated pairs: {old.version} -> {new.version}, pairwise accuracy "
        f"{st['accuracy_before']:.2f} -> {st['accuracy_after']:.2f}{held}; unit tests "
        f"{tested['verdict'] if tested else 'not run (no validation references)'}"
    )
    new_config = copy.deepcopy(row["config"])
    new_config["reward"]["path"] = str(new_dir)
    new_config = config_to_dict(config_from_dict(new_config))
    if apply:
        store.update_config(
            cid,
            new_config,
            actor,
            f"{msg}; reward.path switched by {actor}",
            {"before": {"reward.path": rc.path}, "after": {"reward.path": str(new_dir)}},
        )
    store.add_event(cid, "reward_refresh", msg, figures, actor=actor)
    return figures | {"config": new_config, "message": msg}
