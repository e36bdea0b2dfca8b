"""Drift audit page: reward-model versions, the event log export and the self-contained HTML audit
report."""

from __future__ import annotations

from apptest_helpers import AUDITOR, _service, app, frame


def test_audit_report_is_one_self_contained_html_file(synthetic):
    import re

    from dashboard.report_html import build_audit_report

    db, cid = synthetic
    doc = build_audit_report(_service(db).store, cid)
    assert (
        doc.startswith("<!DOCTYPE html>") and doc.count("window.PlotlyConfig") == 1
    )  # plotly.js inline, once
    assert (
        doc.count('class="plotly-graph-div"') >= 2
    )  # histogram and ECDF (and the test matrix once runs exist)
    tags = re.findall(r"<(?:script|link|img|iframe)\b[^>]*>", doc)
    assert tags and not [t for t in tags if re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", t)], (
        tags
    )
    for section in (
        "Campaign summary",
        "Per-step table",
        "Reward distributions per Grow step",
        "Drift statistics",
        "Reward-model versions and unit tests",
        "Rating statistics",
        "Event log",
    ):
        assert f"<h2>{section}</h2>" in doc, section
    assert "grow 1 → grow 2" in doc and 'class="alarm-box"' in doc and "reward distribution moved" in doc
    assert "campaign created" in doc and "v-syn" in doc


def test_drift_page_lists_reward_versions_and_offers_the_report(synthetic):
    db, cid = synthetic
    at = app(db, AUDITOR, cid)
    at.switch_page("app_pages/drift.py").run()
    assert not at.exception
    versions = frame(at, "used_in_grows")
    row = versions[versions["version"] == "v-syn"].iloc[0]
    assert row["used_in_grows"] == "1, 2" and row["n_samples"] == 160
    assert row["verdict"] in ("pass", "fail", "untested")
    labels = [d.proto.label for d in at.get("download_button")]
    assert labels == ["Download the audit report (HTML)", "Export the event log (JSON)"]


def test_drift_page_shows_every_check_with_its_threshold_and_the_alarms_that_fired(synthetic):
    """A table, not a JSON blob: statistic, value, threshold and fired for every check, with the campaign's
    own limits ([gates] drift_*); grow 2's rewards sit well above grow 1's, so the reward shift fires."""
    from dashboard.report_html import drift_thresholds
    from engine.drift import drift_report

    db, cid = synthetic
    store = _service(db).store
    at = app(db, AUDITOR, cid)
    at.switch_page("app_pages/drift.py").run()
    at = at.button(key="drift_go").click().run()
    assert not at.exception and not at.json
    stats = frame(at, "statistic")
    cfg = store.campaign(cid)["config"]
    rep = drift_report(store, cid, 1, 2, drift_thresholds(cfg))
    fired = set(stats.loc[stats["fired"], "check"])
    assert fired == {al["check"] for al in rep["alarms"]} and "reward_wasserstein" in fired
    row = stats.set_index("check").loc["reward_wasserstein"]
    assert row["threshold"] == cfg["gates"]["drift_reward_wasserstein"] and row["value"] > row["threshold"]
    assert row["value"] == rep["reward"]["wasserstein_norm"]
    assert len(at.error) == len(rep["alarms"])
