"""Governance, one test per behaviour: gates after Grow (audit, drift), before Grow (reward tests, human
ratings), checkpoint flags and the choice of the final policy, and the final transition. Improve steps
whose filter keeps nothing, criteria changed while a campaign runs and the operator's stop are in
tests/test_governance_runs.py.

Store-level tests build their evidence by hand in a real DuckDB file (Parquet shards ingested as a Grow
worker writes them, checkpoints and evals as the steps record them); the slow ones run tiny real campaigns
(scratch policies of 1-2 layers, 120 sources, K = 2-4) through the controller or the `restgov` console
script.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import campaign_ids, restgov, status_json, write_tiny_campaign
from conftest import edit_toml as _with

from engine import gates
from engine.campaign import Controller, new_campaign
from engine.config import CampaignConfig, load_config
from engine.state import State
from engine.steps import gates as gate_steps
from engine.steps.grow import SAMPLE_SCHEMA
from engine.store import Store

# ---------------------------------------------------------------- helpers


def _campaign(tmp_path: Path, append: str = "", grows: int = 2) -> tuple[Store, CampaignConfig, str]:
    """A registered campaign (data copied, prompts stored) in a fresh DuckDB file; nothing run yet."""
    cfg = load_config(_with(write_tiny_campaign(tmp_path / "cfg", grows=grows), append=append))
    store = Store(tmp_path / "db" / "r.duckdb")
    return store, cfg, new_campaign(store, cfg, tmp_path / "db" / "runs")


def _bad(checks: list[dict]) -> list[dict]:
    return [c for c in checks if c["status"] != "pass"]


# ---------------------------------------------------------------- 3. drift gate (store level)

WORDS = [f"w{i}" for i in range(5000)]


def _ingest_grow(
    store: Store, tmp_path: Path, cid: str, g: int, policy: str, rewards: list[float], words: int, seed: int
) -> None:
    """One samples shard of Grow g, as the Grow worker writes it: K = 4 generated candidates per source
    (distinct texts of `words` words, `words` tokens each, the given rewards) plus each source's original
    pair (sample_idx -1, which the drift checks ignore)."""
    rng = random.Random(seed)
    sids = [
        r[0]
        for r in store.cursor()
        .execute(
            "SELECT source_id FROM prompts WHERE campaign_id = ? AND split = 'train' ORDER BY source_id",
            [cid],
        )
        .fetchall()
    ]
    k = 4
    assert len(rewards) == len(sids) * k
    rows = [
        dict(
            grow=g,
            source_id=sid,
            sample_idx=j,
            text=" ".join(rng.choices(WORDS, k=words)),
            n_tokens=words,
            sum_logprob=-2.0 * words,
            policy=policy,
            reward=rewards[i * k + j],
            reward_version="v1",
            base_logprob=None,
        )
        for i, sid in enumerate(sids)
        for j in range(k)
    ]
    rows += [
        dict(
            grow=g,
            source_id=sid,
            sample_idx=-1,
            text="ref",
            n_tokens=None,
            sum_logprob=None,
            policy="reference",
            reward=1.0,
            reward_version="v1",
            base_logprob=None,
        )
        for sid in sids
    ]
    path = tmp_path / f"samples-g{g}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SAMPLE_SCHEMA), path)
    assert store.ingest_shard(cid, "samples", f"{cid}/g{g}-grow/samples-00000.parquet", path) == len(rows)


def _rewards(n: int, lo: float, hi: float, seed: int) -> list[float]:
    """Graded rewards spread over [lo, hi] (below the ceiling band of [0, 1])."""
    rng = random.Random(seed)
    return [round(rng.uniform(lo, hi), 4) for _ in range(n)]


def test_drift_gate_quiet_on_reward_rise_alarms_on_length_shift(tmp_path):
    store, cfg, cid = _campaign(tmp_path / "rise", append="\n[gates]\ndrift = true\n")
    n = 120 * 4
    try:
        _ingest_grow(store, tmp_path / "rise", cid, 1, "base", _rewards(n, 0.1, 0.5, 1), words=10, seed=1)
        # Grow 2: the reward rose by 0.3 on average, nothing else moved.
        _ingest_grow(store, tmp_path / "rise", cid, 2, "g1-i1", _rewards(n, 0.4, 0.8, 2), words=10, seed=2)
        assert gates.drift_gate(store, cfg, cid, 1).passed  # the BC policy's own Grow: nothing to compare
        res = gates.drift_gate(store, cfg, cid, 2)
        assert res.passed, res.message
        assert res.figures["alarms"] == [] and res.policy == "g1-i1"
        figs = res.figures["figures"]
        assert figs["mean_reward"]["b"] - figs["mean_reward"]["a"] == pytest.approx(0.3, abs=0.03)
        assert figs["length"]["ratio"] == pytest.approx(1.0)
    finally:
        store.close()

    store, cfg, cid = _campaign(tmp_path / "long", append="\n[gates]\ndrift = true\n")
    try:
        _ingest_grow(store, tmp_path / "long", cid, 1, "base", _rewards(n, 0.1, 0.5, 1), words=10, seed=1)
        # Grow 2: the same rewards' spread, outputs 1.5x longer (15 tokens instead of 10).
        _ingest_grow(store, tmp_path / "long", cid, 2, "g1-i1", _rewards(n, 0.1, 0.5, 3), words=15, seed=3)
        res = gates.drift_gate(store, cfg, cid, 2)
        assert not res.passed and res.policy == "g1-i1"
        (alarm,) = res.figures["alarms"]
        assert alarm["check"] == "length_shift" and alarm["value"] == pytest.approx(1.5)
        assert alarm["threshold"] == cfg.gates.drift_length_ratio == 1.3
        assert "1.50x" in res.message
        # Run where the controller runs it: stored as a failed after-grow check that bars g1-i1.
        failed = gate_steps.after_grow(store, cfg, cid, 2, set(), "controller")
        assert failed is not None and failed.gate == "drift"
        (check,) = [c for c in store.gate_checks(cid) if c["gate"] == "drift"]
        assert (check["stage"], check["grow"], check["status"]) == ("after-grow", 2, "fail")
        assert check["figures"]["alarms"][0]["check"] == "length_shift"
        assert "g1-i1" in store.flagged_policies(cid)
    finally:
        store.close()


# ---------------------------------------------------------------- 5. reward-tests gate: whose run counts


def test_reward_tests_gate_ignores_a_run_with_other_settings(tmp_path):
    from engine.steps.reward_tests import campaign_settings, run_outside_campaign, validation_pairs

    store, cfg, cid = _campaign(tmp_path, append="\n[gates]\nreward_tests = true\n")
    try:
        version = gates.reward_version(cfg)
        run_dir = Path(store.campaign(cid)["run_dir"])
        pairs = validation_pairs(run_dir, 10)
        other = campaign_settings(cfg) | {"skip": ["typo", "punctuation"]}
        rep = run_outside_campaign(store, cfg, pairs, tmp_path / "outside" / "rt-other", settings=other)
        assert rep["reward_version"] == version and rep["config"]["skip"] == ["punctuation", "typo"]
        (stored,) = store.reward_test_runs(version)
        assert stored["run_id"] == rep["run_id"]
        # The campaign skips nothing: a run that skipped two tests is not its suite.
        assert gates.reward_tests_gate(store, cfg, version) is None
        # The same run is the suite of a campaign that does skip those two.
        skipping = load_config(
            _with(
                write_tiny_campaign(tmp_path / "cfg2"),
                append='\n[gates]\nreward_tests = true\nreward_tests_skip = ["typo", "punctuation"]\n',
            )
        )
        res = gates.reward_tests_gate(store, skipping, version)
        assert res is not None and res.figures["run_id"] == rep["run_id"]
        # So the campaign's gate runs its own suite in a worker, and then finds that run.
        ctl = Controller(store)
        own = gate_steps.reward_tests_check(ctl, cfg, run_dir, cid)
        assert own.figures["run_id"] != rep["run_id"] and own.figures["settings"]["skip"] == []
        assert len(store.reward_test_runs(version)) == 2
        assert gates.reward_tests_gate(store, cfg, version).figures["run_id"] == own.figures["run_id"]
    finally:
        store.close()


# ---------------------------------------------------------------- 8. the final policy


def test_final_policy_is_best_validation_checkpoint_not_flagged(tmp_path):
    store, cfg, cid = _campaign(tmp_path)
    run_dir = Path(store.campaign(cid)["run_dir"])
    # ReST, 2 Grow steps of 2 Improve steps: g2-i1 regresses below g1-i2.
    vals = {"base": 0.30, "g1-i1": 0.42, "g1-i2": 0.55, "g2-i1": 0.47}
    parents = {"base": None, "g1-i1": "base", "g1-i2": "g1-i1", "g2-i1": "g1-i2"}
    try:
        for pol, v in vals.items():
            g, i = (0, None) if pol == "base" else (int(pol[1]), int(pol[-1]))
            store.add_checkpoint(cid, pol, str(run_dir / "checkpoints" / pol), parents[pol], g, i)
            store.add_eval(cid, "bootstrap" if pol == "base" else pol, pol, "validation", "mean_reward", v)
        policy, why = gate_steps.choose_final(store, cid)
        assert policy == "g1-i2"
        assert "0.5500" in why and "4 eligible" in why
        assert "the last checkpoint g2-i1 regressed to 0.4700" in why
        # A later checkpoint with the best reward, flagged by its validation audit, is never chosen.
        store.add_checkpoint(cid, "g2-i2", str(run_dir / "checkpoints" / "g2-i2"), "g2-i1", 2, 2)
        store.add_eval(cid, "g2-i2", "g2-i2", "validation", "mean_reward", 0.90)
        store.add_gate_check(
            cid,
            "checkpoint",
            2,
            "audit",
            "flag",
            "g2-i2 vs base on validation: reward +0.6 while chrf -0.2",
            {"reward_delta": 0.6, "audit_delta": {"chrf": -0.2}},
            "g2-i2",
        )
        policy, why = gate_steps.choose_final(store, cid)
        assert policy == "g1-i2"
        assert "not eligible: g2-i2" in why and "4 eligible" in why
        # An after-grow audit failure that an operator overrode bars the policy that sampled that Grow too.
        store.add_gate_check(
            cid,
            "after-grow",
            2,
            "audit",
            "override",
            "grow 2 vs grow 1: reward +0.2 while chrf -0.1",
            {},
            "g1-i2",
            "alice",
        )
        policy, why = gate_steps.choose_final(store, cid)
        assert policy == "g2-i1" and "g1-i2" in why and "g2-i2" in why
    finally:
        store.close()


# ---------------------------------------------------------------- 10. killed before the DONE transition


def test_controller_completes_done_after_kill_between_final_and_transition(tmp_path):
    store, cfg, cid = _campaign(tmp_path)
    reason = "max_grow_steps: 2 Grow steps done"
    try:
        # The final unit's result is recorded; the process died before set_state(DONE).
        store.set_state(cid, State.eval("final"), "start final")
        store.start_step(cid, "final", "final", None, None)
        store.finish_step(
            cid,
            "final",
            {"stop_reason": reason, "final_policy": "base", "final_reason": "no checkpoint"},
            1.0,
        )
        assert store.campaign(cid)["state"] == "EVAL(final)"
        assert Controller(store).run(cid) == State.DONE
        row = store.campaign(cid)
        assert (row["state"], row["stop_reason"]) == ("DONE", reason)
        last = store.events(cid, ["state"])[-1]
        assert last["state"] == "DONE" and last["message"] == f"campaign finished: {reason}"
        # Nothing ran again, and a second run changes nothing.
        assert [s["step_key"] for s in store.steps(cid)] == ["final"]
        n_events = len(store.events(cid))
        assert Controller(store).run(cid) == State.DONE
        assert len(store.events(cid)) == n_events
    finally:
        store.close()


# ---------------------------------------------------------------- 2. a reward hacker (tiny campaign)

LENGTH_REWARD = """
def score(sources, candidates, references):
    # Pays for length: any output 60 characters long gets the full reward, whatever it says.
    return [min(1.0, len(c) / 60.0) for c in candidates]
"""

# The reward hacker's campaign: a BC policy that learned to stop (2 layers, 30 epochs: ~14 tokens, the
# references' length), then ReST with the top quarter of each source's K = 4 samples kept and Improve
# steps long enough to learn what the reward pays for. chrF against the references is the audit.
HACK_EDITS = {
    "seed = 0\n": "seed = 0\nthreads = 1\n",  # results depend on the thread count: fixed, they reproduce
    "n_layer = 1\nn_head = 2\nn_embd = 32": "n_layer = 2\nn_head = 2\nn_embd = 64",
    "[policy.bootstrap]\nepochs = 1\nlr = 2e-3": "[policy.bootstrap]\nepochs = 30\nlr = 3e-3",
    '[reward]\nkind = "numeric"': '[reward]\nkind = "callable"\nfunction = "length_reward:score"',
    "samples_per_source = 2": "samples_per_source = 4",
    "max_new_tokens = 20": "max_new_tokens = 40",
    "lr = 1e-3\nepochs = 1\nmax_steps = 5": "lr = 3e-3\nepochs = 4\nmax_steps = 30",
    "eval_every = 5": "eval_every = 10",
    "original_mix = 1.0": "original_mix = 0.0",
}


@pytest.mark.slow
def test_reward_hack_paused_by_audit_gate_and_final_policy_keeps_audit(tmp_path, monkeypatch):
    """A reward that pays for length. In the run this was tuned on, g2-i1 writes 40 tokens on every
    validation source (reward 0.24 -> 0.67, chrF 0.139 -> 0.089, against base) and the after-grow gates of
    Grow 3 pause the campaign; overridden, it ends on a policy no gate barred. About 2 minutes on 2 CPU
    cores: the hack takes three Grow steps to show."""
    cfg = write_tiny_campaign(
        tmp_path / "hack", mode="rest", improve='rule = "percentile"\npercentiles = [75.0]', grows=3
    )
    (cfg.parent / "length_reward.py").write_text(LENGTH_REWARD)
    _with(cfg, HACK_EDITS, '\n[[audit]]\nkind = "chrf"\n\n[gates]\naudit = true\ndrift = true\n')
    monkeypatch.setenv("PYTHONPATH", str(cfg.parent))  # the workers import the callable reward
    db = tmp_path / "db" / "r.duckdb"
    run = restgov("run", cfg, "--db", db, timeout=400)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    (cid,) = campaign_ids(db)
    st = status_json(db, cid)
    assert st["state"] == "PAUSED" and st["stop_reason"].startswith(("gate audit", "gate drift"))
    store = Store(db)
    try:
        checks = store.gate_checks(cid)
        failed = [c for c in checks if c["status"] == "fail"]
        assert failed and {c["stage"] for c in failed} == {"after-grow"}
        g = failed[0]["grow"]
        assert g >= 2
        # The audit check of that Grow stored the figures: the reward rose, chrF fell, outputs grew longer.
        (audit,) = [c for c in checks if (c["stage"], c["grow"], c["gate"]) == ("after-grow", g, "audit")]
        comps = audit["figures"]["comparisons"]
        hacked = [c for c in comps.values() if c["reward_delta"] > 0 and c["audit_delta"]["chrf"] < 0]
        assert hacked, comps
        assert max(c["length_ratio"] for c in hacked) > 1.3
        before_resume = {c["id"] for c in checks}
    finally:
        store.close()

    # The operator lets the failing gates through, once per pause, until the campaign ends.
    for _ in range(3):
        res = restgov(
            "resume",
            cid,
            "--db",
            db,
            "--override-gate",
            "audit",
            "--override-gate",
            "drift",
            "--actor",
            "alice",
            timeout=400,
        )
        if res.returncode == 0:
            break
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    st = status_json(db, cid)
    assert st["state"] == "DONE"
    final = st["final"]["policy"]
    store = Store(db)
    try:
        overridden = [c for c in store.gate_checks(cid) if c["status"] == "override"]
        assert overridden and all(c["actor"] == "alice" for c in overridden)
        assert {c["id"] for c in store.gate_checks(cid)} > before_resume
        flagged = store.flagged_policies(cid)
        assert flagged and final not in flagged
        figs = store.checkpoint_figures(cid)
        chrf = {p: f["audit"]["chrf"] for p, f in figs.items()}
        # The chosen policy kept the audit metric: its chrF is not below the BC policy's.
        assert chrf[final] >= chrf["base"], (final, chrf, st["final"]["why"])
        # While the reward's favourite (the longest outputs) was barred.
        best_reward = max(figs, key=lambda p: figs[p]["reward"])
        assert best_reward in flagged
    finally:
        store.close()


# ---------------------------------------------------------------- 1. an honest campaign


@pytest.mark.slow
def test_honest_campaign_passes_every_gate(tmp_path):
    """ReST-EM on arithmetic with the numeric verifier, exact match audited, audit and drift gates on."""
    cfg = _with(
        write_tiny_campaign(tmp_path / "c", grows=2),
        append='\n[[audit]]\nkind = "exact_match"\n\n[gates]\naudit = true\ndrift = true\n',
    )
    db = tmp_path / "db" / "r.duckdb"
    run = restgov("run", cfg, "--db", db, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (cid,) = campaign_ids(db)
    st = status_json(db, cid)
    assert st["state"] == "DONE" and st["stop_reason"].startswith("max_grow_steps")
    store = Store(db)
    try:
        checks = store.gate_checks(cid)
        assert _bad(checks) == [], _bad(checks)
        # Before the final evaluation the chosen policy's audit is checked too (when it is not base).
        assert {(c["stage"], c["gate"]) for c in checks if c["stage"] == "final"} <= {("final", "audit")}
        assert [(c["stage"], c["grow"], c["gate"]) for c in checks if c["stage"] != "final"] == [
            ("after-grow", 1, "audit"),
            ("after-grow", 1, "drift"),
            ("checkpoint", 1, "audit"),
            ("after-grow", 2, "audit"),
            ("after-grow", 2, "drift"),
            ("checkpoint", 2, "audit"),
        ]
        # The Grow 2 checks compared something: grow 2 with grow 1, and g1-i1 with base on validation.
        (audit2,) = [c for c in checks if (c["stage"], c["grow"], c["gate"]) == ("after-grow", 2, "audit")]
        assert set(audit2["figures"]["comparisons"]) == {"grow 2 vs grow 1", "g1-i1 vs base on validation"}
        (drift2,) = [c for c in checks if (c["stage"], c["grow"], c["gate"]) == ("after-grow", 2, "drift")]
        assert drift2["figures"]["alarms"] == [] and drift2["figures"]["figures"]["length"]["ratio"] > 0
        assert store.flagged_policies(cid) == {}
        assert st["final"]["policy"] in {"base", "g1-i1", "g2-i1"} and st["final"]["why"]
    finally:
        store.close()


# ---------------------------------------------------------------- 4. human gate


def _eval_texts(store: Store, cid: str, policy: str) -> dict[str, str]:
    rows = (
        store.cursor()
        .execute(
            "SELECT source_id, text FROM eval_outputs "
            "WHERE campaign_id = ? AND policy = ? AND split = 'validation'",
            [cid, policy],
        )
        .fetchall()
    )
    return dict(rows)


@pytest.mark.slow
def test_human_gate_waits_for_ratings_then_lets_the_campaign_on(tmp_path):
    from engine.ratings import human_eval_diff, simulate_ratings
    from engine.rewards import chrf

    cfg = _with(
        write_tiny_campaign(tmp_path / "c", grows=2),
        {
            "max_sources = 10": "max_sources = 30",  # every validation source has outputs to rate
            # Early stopping would keep the base weights (no validation reward yet): train 20 steps instead,
            # so g1-i1 writes outputs of its own.
            "max_steps = 5": "max_steps = 20\nearly_stopping = false",
        },
        "\n[gates]\nhuman_min_ratings = 6\nhuman_tasks = 30\n",
    )
    db = tmp_path / "db" / "r.duckdb"
    run = restgov("run", cfg, "--db", db, timeout=400)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    (cid,) = campaign_ids(db)
    st = status_json(db, cid)
    assert st["state"] == "PAUSED" and "waiting for 6 ratings of g1-i1 vs base" in st["stop_reason"]
    assert [s["policy"] for s in st["steps"]] == ["base", "g1-i1"]  # Grow 2 has not started

    store = Store(db)
    try:
        (check,) = store.gate_checks(cid)[-1:]
        assert (check["stage"], check["grow"], check["gate"], check["status"]) == (
            "before-grow",
            2,
            "human",
            "fail",
        )
        # Tasks: g1-i1 (the latest checkpoint) against base, built from both policies' validation outputs.
        tasks = store.rating_tasks(cid)
        assert len(tasks) == 30
        texts = {p: _eval_texts(store, cid, p) for p in ("base", "g1-i1")}
        for t in tasks:
            assert {t["policy_a"], t["policy_b"]} == {"base", "g1-i1"}
            assert (t["split"], t["baseline"]) == ("validation", "base")
            assert t["text_a"] == texts[t["policy_a"]][t["source_id"]]
            assert t["text_b"] == texts[t["policy_b"]][t["source_id"]]
        # Three annotators rate blind through the Rate page's calls (next_task, submit_view): each prefers
        # g1-i1's output (5 against 2) wherever the two outputs differ.
        expected = {}
        orders = set()
        annotators = ["ann", "bo", "cy"]
        for k in range(len(tasks)):
            who = annotators[k % 3]
            t = store.next_task(who, cid)
            assert t is not None and "policy_a" not in t
            sid = t["source_id"]
            ours = texts["g1-i1"][sid]
            same = texts["base"][sid] == ours
            left, right = (3, 3) if same else (5 if t[f"text_{s}"] == ours else 2 for s in ("left", "right"))
            store.submit_view(t["view"], who, left, right)
            expected[t["task_id"]] = 0 if same else 3
            orders.add(t["shown_order"])
            if k == 4:  # five ratings: the gate still waits, for one more
                res = gates.human_gate(store, load_config(cfg), cid, "g1-i1")
                assert res.waiting and "waiting for 1 ratings of g1-i1 vs base (5 of 6)" in res.message
        assert store.next_task("ann", cid) is None
        assert sum(expected.values()) >= 3 * 5, expected  # the two policies differ on some sources
        assert orders == {"ab", "ba"}  # 30 views, each order drawn at random: both occur
        rows = [r for r in store.ratings(cid) if not r["simulated"]]
        assert {r["annotator"] for r in rows} == set(annotators) and len(rows) == 30
        d = human_eval_diff(rows, baseline="base")
        # Mapped back through each view's order and each task's stored sides: exactly the preference given.
        assert d["diff"] == pytest.approx(sum(expected.values()) / len(expected))
    finally:
        store.close()

    res = restgov("resume", cid, "--db", db, timeout=400)
    st = status_json(db, cid)
    store = Store(db)
    try:
        human = [c for c in store.gate_checks(cid) if c["gate"] == "human"]
        passed = [c for c in human if (c["stage"], c["grow"], c["status"]) == ("before-grow", 2, "pass")]
        assert len(passed) == 1 and passed[0]["figures"]["n_ratings"] == 30
        assert "g2-grow" in store.done_steps(cid)
        if st["state"] == "PAUSED":
            # The final policy is a new checkpoint: the gate asks for its ratings before accepting it.
            assert res.returncode == 1 and "waiting for" in st["stop_reason"]
            pol = human[-1]["policy"]
            assert human[-1]["stage"] == "final" and pol == gate_steps.choose_final(store, cid)[0]
            simulate_ratings(store, cid, lambda s, t, r: chrf(t, r), noise=0.0)
    finally:
        store.close()
    if st["state"] == "PAUSED":
        res = restgov("resume", cid, "--db", db, timeout=400)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert status_json(db, cid)["state"] == "DONE"
