"""Refresh a learned reward from human ratings (the paper's remedy for reward drift): fine-tune a copy of a
MiniLM head on rated pairs with a Bradley-Terry loss, save it as a new version, rerun its unit tests.
"""

from __future__ import annotations

import copy
import json
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


def rated_pairs(tasks: list[dict], ratings: list[dict], references: dict[str, str] | None = None) -> list[RatedPair]:
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
    """Share of pairs the reward orders like the raters; an exact tie counts half."""
    if len(rp) == 0:
        return None
    return float(((rp > ro).float() + 0.5 * (rp == ro).float()).mean())


def refresh_minilm_head(
    head_dir: str | Path,
    pairs: list[tuple[str, str, str, str | None, float]],
    out_dir: str | Path,
    epochs: int | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    anchor_weight: float = 0.05,
    temperature: float = 0.1,
    batch_size: int = 32,
    device: str | None = None,
) -> Path:
    """Fine-tune a copy of the head at `head_dir` on (source, preferred, other, reference, margin) pairs.

    Loss per pair: margin-weighted -log sigmoid((r_pref - r_other) / temperature), plus anchor_weight times
    the mean squared change of the rewards of the same texts (in temperature units) against the old head,
    so the head moves where raters disagree with it and little elsewhere. 20% of the pairs are held out when
    there are >= 10. epochs=None runs at least 300 Adam steps. Same inputs and seed give the same head.
    """
    src, out = Path(head_dir), Path(out_dir)
    if out.resolve() == src.resolve():
        raise RewardError(f"refresh would overwrite its parent {src}: give a new out_dir (each refresh is a new version)")
    if temperature <= 0 or lr <= 0 or anchor_weight < 0 or batch_size < 1:
        raise RewardError(f"refresh: need temperature > 0, lr > 0, anchor_weight >= 0, batch_size >= 1, got "
                          f"{temperature}, {lr}, {anchor_weight}, {batch_size}")
    old = MiniLMReward(src, device=device)
    ps = [RatedPair(*p) for p in pairs]
    if len(ps) < 2:
        raise RewardError(f"refresh needs at least 2 rated pairs with a preference, got {len(ps)}")
    if any(not p.margin > 0 or not math.isfinite(p.margin) for p in ps):
        raise RewardError("refresh: every pair needs a finite margin > 0 (the preferred text's score lead)")
    if old.needs_reference and any(not p.reference for p in ps):
        raise RewardError(f"head {src} compares with references, but {sum(not p.reference for p in ps)} pairs have none")
    others = [(p.reference if old.needs_reference else p.source) or "" for p in ps]
    enc = old.encoder
    e_other = enc.encode(others)
    fp = build_features(enc.encode([p.preferred for p in ps]), e_other, [p.preferred for p in ps], others)
    fo = build_features(enc.encode([p.other for p in ps]), e_other, [p.other for p in ps], others)
    margin = torch.tensor([p.margin for p in ps], dtype=torch.float32)
    weight = margin / margin.mean()  # a clear preference counts more than a split vote

    n = len(ps)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_held = round(0.2 * n) if n >= 10 else 0
    held, train = perm[:n_held], perm[n_held:]
    base_head = old.head.eval()
    with torch.no_grad():
        ap, ao = base_head(fp), base_head(fo)
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
            anchor = (((rp - ap[idx]) / temperature) ** 2 + ((ro - ao[idx]) / temperature) ** 2).mean() / 2
            loss = bt + anchor_weight * anchor
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_v = float(loss)
    head.eval()
    with torch.no_grad():
        np_, no = head(fp), head(fo)
    shift = torch.cat([np_ - ap, no - ao]).abs()
    stats: dict[str, Any] = {
        "method": "pairwise_bradley_terry", "n_pairs": n, "n_train": len(train), "n_heldout": n_held,
        "epochs": epochs, "steps": epochs * steps_per_epoch, "lr": lr, "seed": seed, "temperature": temperature,
        "anchor_weight": anchor_weight, "batch_size": batch_size, "final_loss": loss_v,
        "accuracy_before": _accuracy(ap, ao), "accuracy_after": _accuracy(np_, no),
        "train_accuracy_before": _accuracy(ap[train], ao[train]), "train_accuracy_after": _accuracy(np_[train], no[train]),
        "heldout_accuracy_before": _accuracy(ap[held], ao[held]) if n_held else None,
        "heldout_accuracy_after": _accuracy(np_[held], no[held]) if n_held else None,
        "mean_abs_shift": float(shift.mean()), "max_abs_shift": float(shift.max()),
    }
    meta = old.meta | {"stats": stats, "parent_version": old.version, "parent_path": str(src.resolve()),
                       "parent_stats": old.meta.get("stats")}
    return _save_head(head, meta, out)


def campaign_prompts(store: Any, cid: str, split: str, limit: int | None = None) -> list[tuple[str, str, str]]:
    """(source_id, source, reference) of a campaign split: from the store's `prompts` when it has one, else
    from the copy of the split that new_campaign wrote to RUN_DIR/inputs/SPLIT.parquet."""
    if hasattr(store, "prompts"):
        return [tuple(r) for r in store.prompts(cid, split, limit)]
    row = store.campaign(cid)
    path = Path(row["run_dir"]) / "inputs" / f"{split}.parquet" if row else None
    if path is None or not path.is_file():
        return []
    import pyarrow.parquet as pq

    rows = pq.read_table(path, columns=["source_id", "source", "reference"]).to_pylist()
    return [(r["source_id"], r["source"], r["reference"] or "") for r in rows[:limit]]


def _suite_figures(run_id: str | None, report: Any) -> dict | None:
    if report is None:
        return None
    if isinstance(report, dict):  # a stored run row
        return {"run_id": report["run_id"], "verdict": report["verdict"], "n_failed": report["n_failed"]}
    return {"run_id": run_id, "verdict": report.verdict, "failed": report.failed, "n_pairs": report.n_pairs}


def refresh_campaign_reward(store: Any, cid: str, out_dir: str | Path | None = None, actor: str = "cli",
                            n_validation: int = 200, **train: Any) -> dict:
    """Refresh campaign `cid`'s learned reward on its human ratings; register, unit-test and log the new version.

    Returns the figures (also the payload of a "reward_refresh" event) plus `config`, the campaign config with
    reward.path pointing at the new head; a store with `update_config(cid, config, actor, message)` gets it
    applied (`config_updated`), so the next Grow scores with the new version. `train` goes to refresh_minilm_head.
    """
    from engine.config import config_from_dict, config_to_dict
    from engine.store import now
    from reward_tests import default_suite, run_suite

    row = store.campaign(cid)
    if row is None:
        raise KeyError(f"no campaign {cid!r} in {store.path}")
    rc = config_from_dict(row["config"]).reward
    if rc.kind not in LEARNED_KINDS:
        raise RewardError(f"campaign {cid} uses reward kind {rc.kind!r}: only learned reward providers "
                          f"(kind {', '.join(map(repr, LEARNED_KINDS))}) can be refreshed from human ratings")
    old = MiniLMReward(rc.path, rc.batch_size)
    refs = {sid: ref for sid, _, ref in campaign_prompts(store, cid, "train")} if old.needs_reference else None
    tasks, ratings = store.rating_tasks(cid), store.ratings(cid)
    found = rated_pairs(tasks, ratings, refs)
    pairs = [p for p in found if p.reference or not old.needs_reference]
    n_rated = len({r["task_id"] for r in ratings})
    if len(pairs) < 2:
        raise RewardError(f"campaign {cid} has {len(pairs)} rated pairs with a preference ({n_rated} rated tasks): "
                          "need at least 2; `restgov ratings create` builds tasks to rate")
    stamp = now().strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir) if out_dir is not None else Path(row["run_dir"]) / "reward_heads" / f"refresh-{stamp}"
    if out.exists():
        raise RewardError(f"{out} already exists: a refresh writes a new head directory")
    new_dir = refresh_minilm_head(rc.path, pairs, out, **train)
    new = MiniLMReward(new_dir, rc.batch_size)
    stats = json.loads((new_dir / "head.json").read_text(encoding="utf-8"))["stats"]
    store.add_reward_model(new.version, new.name, rc.kind, str(new_dir.resolve()))

    val = [(sid, s, r, r) for sid, s, r in campaign_prompts(store, cid, "validation", n_validation) if r]
    report = run_id = None
    if val:
        report = run_suite(new, val[:n_validation], default_suite())
        report.config |= {"reward": {"kind": rc.kind, "path": str(new_dir.resolve())}, "campaign": cid,
                          "refresh_of": old.version}
        run_id = store.save_reward_test_run(report)
    new_config = json.loads(json.dumps(row["config"]))
    new_config["reward"]["path"] = str(new_dir.resolve())
    new_config = config_to_dict(config_from_dict(new_config))
    keys = ("accuracy_before", "accuracy_after", "heldout_accuracy_before", "heldout_accuracy_after",
            "n_train", "n_heldout", "mean_abs_shift", "steps")
    figures = {
        "campaign": cid, "parent_version": old.version, "parent_path": str(Path(rc.path).resolve()),
        "version": new.version, "name": new.name, "path": str(new_dir.resolve()),
        "n_rated_tasks": n_rated, "n_pairs": len(pairs), "n_ties_dropped": n_rated - len(found),
        "n_without_reference": len(found) - len(pairs), **{k: stats[k] for k in keys},
        "unit_tests": _suite_figures(run_id, report),
        "parent_unit_tests": _suite_figures(None, store.latest_reward_test_run(old.version)),
    }
    held = (f", held-out {figures['heldout_accuracy_before']:.2f} -> {figures['heldout_accuracy_after']:.2f}"
            if figures["n_heldout"] else "")
    verdict = figures["unit_tests"]["verdict"] if figures["unit_tests"] else "not run (no validation references)"
    msg = (f"reward refreshed on {len(pairs)} rated pairs: {old.version} -> {new.version}, pairwise accuracy "
           f"{figures['accuracy_before']:.2f} -> {figures['accuracy_after']:.2f}{held}; unit tests {verdict}")
    update = getattr(store, "update_config", None)
    figures["config_updated"] = callable(update)
    if callable(update):
        update(cid, new_config, actor, msg)
    store.add_event(cid, "reward_refresh", msg, figures, actor=actor)
    return figures | {"config": new_config, "message": msg}
