"""Governance page: the gate-check timeline, the box of a campaign paused by a gate (override once, or wait
for ratings), the divergence charts of checkpoints and Grow steps, the final policy beside BC, the
Governance section of the HTML audit report, and the role check.

Each store is built by hand with the engine's own recorders: a ReST campaign (per-source percentiles, two
Improve steps per Grow) with a chrF audit metric, its checkpoints' validation figures, two Grow steps of
samples with their chrF, and the gates run by engine.steps.gates and the real controller where the
evidence is. The policy that sampled Grow 2 (g1-i2) raised the reward while chrF fell and its outputs grew
longer, so the checkpoint audit flags it and the audit and drift gates after Grow 2 fail.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apptest_helpers import ANNOTATOR, AUDITOR, OPERATOR, _service, app, button, texts
from conftest import write_tiny_campaign

from engine.campaign import Controller
from engine.config import config_from_dict, load_config
from engine.steps import gates as gate_steps
from engine.steps.grow import SAMPLE_SCHEMA

PAGE = "app_pages/governance.py"
# Validation figures per checkpoint: (mean reward, mean tokens, chrF). g1-i2 buys reward with chrF.
CHECKPOINTS = {
    "base": (0.30, 8.0, 0.60),
    "g1-i1": (0.40, 8.5, 0.61),
    "g1-i2": (0.55, 12.0, 0.50),
}
# Grow samples: (policy, reward low end, tokens low end, chrF low end); each a uniform band of width 0.2 / 4.
GROWS = {1: ("base", 0.2, 6, 0.55), 2: ("g1-i2", 0.5, 12, 0.40)}
GATES_AUDIT = '\n[[audit]]\nkind = "chrf"\n\n[gates]\naudit = true\ndrift = true\n'
GATES_HUMAN = '\n[[audit]]\nkind = "chrf"\n\n[gates]\naudit = true\nhuman_min_ratings = 3\nhuman_tasks = 5\n'


def _done(store, cid: str, key: str, kind: str, g: int | None, i: int | None, result: dict) -> None:
    store.start_step(cid, key, kind, g, i)
    store.finish_step(cid, key, result | {"seconds": 1.0}, 1.0)


def _checkpoint(store, cfg, cid: str, policy: str, root: Path) -> None:
    """A checkpoint with its validation figures, judged by the checkpoint audit as the controller does."""
    reward, tokens, chrf = CHECKPOINTS[policy]
    g, i = (None, None) if policy == "base" else (int(policy[1]), int(policy[-1]))
    parent = None if policy == "base" else ("base" if i == 1 else f"g{g}-i{i - 1}")
    store.add_checkpoint(cid, policy, str(root / "checkpoints" / policy), parent, g, i)
    key = "bootstrap" if policy == "base" else policy
    store.add_eval(cid, key, policy, "validation", "mean_reward", reward)
    store.add_eval(cid, key, policy, "validation", "mean_tokens", tokens)
    store.add_eval(cid, key, policy, "validation", "audit:chrf", chrf)
    _done(store, cid, key, "bootstrap" if policy == "base" else "improve", g, i, {"val_reward": reward})
    if policy != "base":
        gate_steps.after_checkpoint(store, cfg, cid, policy, g)


def _grow(store, cfg, cid: str, g: int, root: Path) -> None:
    """Grow g's samples (2 per source) with their chrF, ingested as shards; the gates after it are left to
    the controller."""
    policy, lo, tokens, chrf = GROWS[g]
    sids = [
        r[0]
        for r in store.cursor()
        .execute(
            "SELECT source_id FROM prompts WHERE campaign_id = ? AND split = 'train' ORDER BY 1 LIMIT 40",
            [cid],
        )
        .fetchall()
    ]
    rng = random.Random(g)
    samples, audits = [], []
    for sid in sids:
        for k in range(2):
            n = tokens + rng.randint(0, 3)
            samples.append(
                dict(
                    grow=g,
                    source_id=sid,
                    sample_idx=k,
                    text=" ".join(f"w{rng.randint(0, 999)}" for _ in range(n)),
                    n_tokens=n,
                    sum_logprob=-1.0,
                    policy=policy,
                    reward=lo + 0.2 * rng.random(),
                    reward_version="v-gov",
                )
            )
            audits.append(
                dict(grow=g, source_id=sid, sample_idx=k, metric="chrf", value=chrf + 0.1 * rng.random())
            )
    pq.write_table(pa.Table.from_pylist(samples, schema=SAMPLE_SCHEMA), root / f"g{g}-samples.parquet")
    pq.write_table(pa.Table.from_pylist(audits), root / f"g{g}-audits.parquet")
    store.ingest_shard(cid, "samples", f"{cid}-g{g}-samples", root / f"g{g}-samples.parquet")
    store.ingest_shard(cid, "audits", f"{cid}-g{g}-audits", root / f"g{g}-audits.parquet")
    _done(store, cid, f"g{g}-grow", "grow", g, None, {"n": len(samples)})


def _validation_outputs(store, cid: str, root: Path) -> None:
    """Greedy validation outputs of base and g1-i2, what the human gate builds its rating tasks from."""
    rows = [
        dict(policy=p, split="validation", source_id=sid, text=f"{p} says {sid}", n_tokens=3, reward=0.5)
        for p in ("base", "g1-i2")
        for (sid,) in store.cursor()
        .execute("SELECT source_id FROM prompts WHERE campaign_id = ? AND split = 'validation'", [cid])
        .fetchall()
    ]
    pq.write_table(pa.Table.from_pylist(rows), root / "outputs.parquet")
    store.ingest_shard(cid, "outputs", f"{cid}-outputs", root / "outputs.parquet")


def build(root: Path, gates: str, grows: int) -> tuple[Path, str]:
    """A ReST campaign with a chrF audit, checkpoints base, g1-i1, g1-i2 and `grows` Grow steps; then the real
    controller runs the next unit, which is where a gate pauses it."""
    db = root / "db" / "restgov.duckdb"
    svc = _service(db)
    path = write_tiny_campaign(
        root / "arith",
        mode="rest",
        improve='rule = "percentile"\npercentiles = [0.0, 50.0]',
        grows=3,
        name="governed",
    )
    path.write_text(path.read_text() + gates)
    store = svc.store
    cid = svc.create(load_config(path), "olga")
    cfg = config_from_dict(store.campaign(cid)["config"])
    _checkpoint(store, cfg, cid, "base", root)
    _grow(store, cfg, cid, 1, root)
    assert gate_steps.after_grow(store, cfg, cid, 1, set(), "controller") is None
    _done(store, cid, "g1-gates", "gates", 1, None, {"passed": True})
    _checkpoint(store, cfg, cid, "g1-i1", root)
    _checkpoint(store, cfg, cid, "g1-i2", root)
    if grows >= 2:
        _grow(store, cfg, cid, 2, root)
    else:
        _validation_outputs(store, cid, root)
    assert Controller(store).run(cid, actor="olga") == "PAUSED", store.recent_events(cid, 5)
    return db, cid


@pytest.fixture(scope="module")
def audit_paused(tmp_path_factory) -> tuple[Path, str]:
    """Paused by the audit gate after Grow 2 (the drift gate failed there too); tests only read it."""
    return build(tmp_path_factory.mktemp("gov-audit"), GATES_AUDIT, grows=2)


@pytest.fixture(scope="module")
def human_waiting(tmp_path_factory) -> tuple[Path, str]:
    """Paused before Grow 2 by the human gate, waiting for 3 ratings of g1-i2 vs base; tests only read it.
    Stopped at the end, so the server's rating watcher leaves it alone while the store closes."""
    db, cid = build(tmp_path_factory.mktemp("gov-human"), GATES_HUMAN, grows=1)
    yield db, cid
    _service(db).stop(cid, "olga")


def governance(db: Path, user: dict, cid: str):
    at = app(db, user, cid)
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def timeline(html: str) -> list[tuple[str, str]]:
    """(gate, status) of every row of the timeline table."""
    return re.findall(r'<tr data-gate="([^"]+)" data-status="([^"]+)">', html)


def page_html(at) -> str:
    return "\n".join(h.proto.body for h in at.get("html"))


def figure(at, title: str) -> dict:
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return next(s for s in specs if title in s["layout"]["title"]["text"])


def trace(fig: dict, name: str) -> dict:
    return next(t for t in fig["data"] if t.get("name") == name)


def test_timeline_lists_every_check_and_the_box_names_the_gate(audit_paused):
    db, cid = audit_paused
    store = _service(db).store
    checks = store.gate_checks(cid)
    at = governance(db, OPERATOR, cid)
    md = texts(at, "markdown")
    assert "6 checks, 2 failed, 0 overridden, flagged checkpoints: g1-i2" in md
    html = page_html(at)
    assert (
        timeline(html)
        == [(c["gate"], c["status"]) for c in checks]
        == [
            ("audit", "pass"),
            ("drift", "pass"),
            ("audit", "pass"),
            ("audit", "flag"),
            ("audit", "fail"),
            ("drift", "fail"),
        ]
    )
    for status in ("pass", "flag", "fail"):
        assert f">{status}</span>" in html
    for column in ("<th>reward Δ</th>", "<th>chrf Δ</th>", "<th>length ratio</th>", "<th>compared</th>"):
        assert column in html
    # The after-Grow-2 audit row shows its worst comparison flattened, the drift row its length ratio.
    worst = checks[4]["figures"]["comparisons"]["grow 2 vs grow 1"]
    assert f"{worst['reward_delta']:+.4f}" in html and f"{worst['audit_delta']['chrf']:+.4f}" in html
    assert f"×{worst['length_ratio']:.2f}" in html and "grow 2 vs grow 1 (worst of 2)" in html
    ratio = checks[5]["figures"]["figures"]["length"]["ratio"]
    assert f"×{ratio:.2f}" in html and html.count("<details>") == 6

    errors = texts(at)
    assert "Paused by the audit gate" in errors and "reward rose while the audit metric fell" in errors
    assert "The drift gate failed at the same point too: mean generated length moved" in texts(at, "caption")
    labels = [b.label for b in at.button]
    assert "Resume, overriding the audit gate once" in labels and "Resume, checking the gates again" in labels


def test_divergence_chart_has_a_point_per_checkpoint_and_marks_flag_and_final(audit_paused):
    db, cid = audit_paused
    at = governance(db, AUDITOR, cid)
    fig = figure(at, "per checkpoint")
    policies = list(CHECKPOINTS)
    reward, chrf = trace(fig, "mean reward"), trace(fig, "chrf")
    assert reward["x"] == policies and chrf["x"] == policies
    assert reward["y"] == pytest.approx([v[0] for v in CHECKPOINTS.values()])
    assert chrf["y"] == pytest.approx([v[2] for v in CHECKPOINTS.values()])
    flagged = [t for t in fig["data"] if t.get("legendgroup") == "flagged"]
    assert [t["x"] for t in flagged] == [["g1-i2"], ["g1-i2"]]  # on the reward and on the chrF panel
    final = [t for t in fig["data"] if t.get("legendgroup") == "final"]
    assert final and all(t["x"] == ["g1-i1"] for t in final)  # the best unflagged one, not the last
    assert final[0]["name"] == "final if the campaign ended now"
    assert fig["layout"]["yaxis"]["title"]["text"] == "mean reward of greedy validation outputs"
    assert fig["layout"]["yaxis2"]["title"]["text"] == "chrF of the same outputs against the references"
    assert fig["layout"]["legend"]["title"]["text"] == "measure"

    grows = figure(at, "each Grow step generated")
    assert trace(grows, "mean reward")["x"] == ["Grow 1 (sampled by base)", "Grow 2 (sampled by g1-i2)"]
    summaries = _service(db).store.grow_summaries(cid)
    assert trace(grows, "chrf")["y"] == pytest.approx([summaries[g]["audit"]["chrf"] for g in (1, 2)])
    assert trace(grows, "mean tokens")["y"] == pytest.approx([summaries[g]["tokens"] for g in (1, 2)])
    # An auditor reads the box but gets no override button.
    assert "Paused by the audit gate" in texts(at) and not [b for b in at.button if "Resume" in b.label]
    assert "An operator can let this gate through once" in texts(at, "caption")
    assert "If it ended now: **g1-i1**" in texts(at, "info")


def test_override_button_resumes_past_the_gate_once(tmp_path):
    db, cid = build(tmp_path, GATES_AUDIT, grows=2)
    svc = _service(db)
    at = governance(db, OPERATOR, cid)
    at = button(at, "Resume, overriding the audit gate once").click().run()
    assert svc.wait(cid, 120)
    request = svc.store.recent_events(cid, 20, kinds=["request"])
    assert any(
        e["actor"] == "olga" and e["message"].endswith("overriding gate(s) audit once") for e in request
    ), request
    checks = svc.store.gate_checks(cid)
    override = [c for c in checks if c["status"] == "override"]
    assert [(c["stage"], c["grow"], c["gate"], c["actor"]) for c in override] == [
        ("after-grow", 2, "audit", "olga")
    ]
    # Only that gate, only once: the drift gate failed again at the same point and paused the campaign.
    row = svc.store.campaign(cid)
    assert row["state"] == "PAUSED" and row["stop_reason"].startswith("gate drift: mean generated length")
    assert checks[-1]["gate"] == "drift" and checks[-1]["status"] == "fail"
    at = governance(db, OPERATOR, cid)
    assert "8 checks, 3 failed, 1 overridden, flagged checkpoints: g1-i2" in texts(at, "markdown")
    assert "Paused by the drift gate" in texts(at)
    assert ">override</span>" in page_html(at)
    assert "Resume, overriding the drift gate once" in [b.label for b in at.button]


def test_human_gate_box_says_the_campaign_waits_for_ratings(human_waiting):
    db, cid = human_waiting
    at = governance(db, OPERATOR, cid)
    assert "Paused by the human gate" in texts(at) and "waiting for 3 ratings of g1-i2 vs base" in texts(at)
    assert "resumes by itself once the ratings are in" in texts(at, "info")
    links = [(p.proto.label, p.proto.page) for p in at.get("page_link")]
    assert ("Rate the outputs now", "rate") in links and ("Change the gate criteria", "stopping") in links
    assert timeline(page_html(at))[-1] == ("human", "fail")
    assert "<th>ratings</th>" in page_html(at) and ">0 of 3<" in page_html(at)
    assert not [g for g in timeline(page_html(at)) if g[0] == "drift"]  # this campaign has no drift gate

    at = governance(db, AUDITOR, cid)  # auditors may not rate: no link to a page they cannot open
    assert "resumes by itself once the ratings are in" in texts(at, "info")
    assert not [p for p in at.get("page_link") if p.proto.label == "Rate the outputs now"]


def test_final_policy_is_shown_beside_bc(tmp_path):
    from engine.steps import Unit, final

    db, cid = build(tmp_path, GATES_AUDIT, grows=2)
    store = _service(db).store
    policy, why = gate_steps.choose_final(store, cid)
    assert policy == "g1-i1" and "not eligible: g1-i2" in why
    unit = Unit(cid, "final", "final", reason="maximum Grow steps reached")
    store.start_step(cid, "final", "final", None, None)
    result = {
        "split": "test",
        "policies": {
            "base": {
                "mean_reward": 0.31,
                "mean_tokens": 8.2,
                "audit": {"chrf": 0.58},
                "best_of_n": {"1": 0.31},
            },
            "g1-i1": {
                "mean_reward": 0.42,
                "mean_tokens": 8.9,
                "audit": {"chrf": 0.6},
                "best_of_n": {"1": 0.42},
            },
        },
    }
    final.record(store, unit, {"final_policy": policy, "final_reason": why}, result)
    store.finish_step(cid, "final", result | {"seconds": 1.0}, 1.0)
    store.set_state(cid, "DONE", "campaign finished", reason="maximum Grow steps reached")

    at = governance(db, AUDITOR, cid)
    assert f"**Final policy: `g1-i1`** · {why}" in texts(at, "markdown")
    rows = next(d.value for d in at.dataframe if "role" in d.value.columns)
    assert list(rows["policy"]) == ["base", "g1-i1"] and list(rows["role"]) == ["BC baseline", "final policy"]
    assert list(rows["test reward"]) == pytest.approx([0.31, 0.42])
    assert list(rows["test chrf"]) == pytest.approx([0.58, 0.6])
    metrics = {m.label: (m.value, m.proto.body) for m in at.metric}
    assert metrics["test reward (final vs BC)"][0] == "0.4200"
    fig = figure(at, "per checkpoint")
    assert [t["name"] for t in fig["data"] if t.get("legendgroup") == "final"] == ["final policy"] * 2
    assert not texts(at)  # no paused box once DONE


def test_audit_report_has_the_governance_section(audit_paused):
    from dashboard.report_html import build_audit_report

    db, cid = audit_paused
    doc = build_audit_report(_service(db).store, cid)
    assert "<h2>Governance</h2>" in doc
    assert "6 checks, 2 failed, 0 overridden, flagged checkpoints: g1-i2" in doc
    assert [s for _, s in timeline(doc)] == ["pass", "pass", "pass", "flag", "fail", "fail"]
    assert "Validation reward and audit metrics per checkpoint" in doc
    assert "What each Grow step generated" in doc
    assert "Paused by the audit gate" in doc
    assert doc.count("window.PlotlyConfig") == 1  # plotly.js still inline once


def test_governance_page_is_refused_to_annotators(audit_paused):
    import os

    from apptest_helpers import ROOT
    from streamlit.testing.v1 import AppTest

    db, cid = audit_paused
    at = app(db, ANNOTATOR, cid)
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page(PAGE)
    os.environ["RESTGOV_DB"] = str(db)
    at = AppTest.from_file(str(ROOT / "dashboard" / "app_pages" / "governance.py"), default_timeout=30)
    at.session_state["user"] = ANNOTATOR
    at.run()
    assert "Access refused: **Governance** is for operator and auditor accounts" in texts(at)
    assert not at.title


@pytest.mark.slow
def test_governance_page_on_a_campaign_run_to_done(campaign):
    """The tiny ReST-EM campaign the dashboard's controller ran to DONE (no [[audit]] metric): its checks, its
    checkpoints' validation reward, and the final policy it chose beside BC."""
    from engine.report import campaign_status

    db, cid, _ = campaign
    store = _service(db).store
    status = campaign_status(store, cid)
    checks = store.gate_checks(cid)
    at = governance(db, OPERATOR, cid)
    assert f"{len(checks)} check" in texts(at, "markdown") and "flagged checkpoints: none" in texts(
        at, "markdown"
    )
    assert timeline(page_html(at)) == [(c["gate"], c["status"]) for c in checks]
    fig = figure(at, "per checkpoint")
    ckpt = store.checkpoint_figures(cid)
    assert trace(fig, "mean reward")["x"] == sorted(ckpt, key=lambda p: (p != "base", p))
    final = status["final"]
    assert f"**Final policy: `{final['policy']}`** · {final['why']}" in texts(at, "markdown")
    rows = next(d.value for d in at.dataframe if "role" in d.value.columns)
    split = final["split"]
    assert dict(zip(rows["policy"], rows[f"{split} reward"])) == pytest.approx(final["mean_reward"])
    assert not texts(at)


@pytest.fixture(scope="module")
def rated(tmp_path_factory):
    from rating_store import rating_campaign

    return rating_campaign(tmp_path_factory.mktemp("gov-rated"))


def test_rating_task_form_offers_only_policies_with_outputs_and_builds_bc_vs_latest(rated):
    """g2-i1 sampled no Grow step: the samples origin does not offer it, and each default pair builds. One
    click pairs BC with the latest checkpoint on validation sources (the human gate's tasks)."""
    db, cid = rated
    store = _service(db).store

    def count(where: str) -> int:
        sql = f"SELECT count(*) FROM rating_tasks WHERE campaign_id = ? AND {where}"
        return store.cursor().execute(sql, [cid]).fetchone()[0]

    assert not [b for b in governance(db, AUDITOR, cid).button if b.key == "gov_rate_default"]
    at = governance(db, OPERATOR, cid)
    one_click = at.button(key="gov_rate_default")
    assert one_click.label == "Create tasks: BC (base) vs latest checkpoint g2-i1 on validation sources"
    at = one_click.click().run()
    assert not at.exception and not texts(at)
    made = count("split = 'validation' AND list_sort([policy_a, policy_b]) = ['base', 'g2-i1']")
    # 20 asked, 6 validation sources have outputs of both policies
    assert made == 6 and "6 rating tasks created for BC (base) vs latest" in texts(at, "success")
    at.radio(key="gov_rate_origin").set_value("Grow samples (training sources)").run()
    pa_, pb_ = (s for s in at.selectbox if s.key.startswith("gov_rate_p"))
    assert pa_.options == ["reference", "base", "g1-i1"] and (pa_.value, pb_.value) == ("base", "g1-i1")
    at = button(at, "Create tasks for this pair").click().run()
    assert not at.exception and not texts(at)
    trained = count("split = 'train' AND list_sort([policy_a, policy_b]) = ['base', 'g1-i1']")
    assert trained == 12 and "12 rating tasks created for base vs g1-i1" in texts(at, "success")
