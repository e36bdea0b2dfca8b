"""A campaign's audit report as one self-contained HTML file (the Drift audit page offers it for download).

Everything an auditor needs offline: the campaign summary, the per-step table, reward histograms and ECDFs per
Grow step with the Improve thresholds, drift statistics between steps with their alarms, the event log, the
reward-model versions with their unit-test verdicts, and the rating statistics. The figures are Plotly with
plotly.js embedded once in the file: opening it needs no network (no CDN, no external script or stylesheet).
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime

from dashboard import charts
from dashboard import governance_panel as gov
from engine.report import campaign_status

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}
STEP_COLUMNS = [
    "grow",
    "improve",
    "policy",
    "rule",
    "tau",
    "param",
    "kept",
    "n_total",
    "kept_mean_reward",
    "val_reward",
]
# Columns of store.reward_versions shown per reward-model version (the Drift page adds path and registration).
REWARD_VERSION_COLUMNS = [
    "version",
    "name",
    "kind",
    "used_in_grows",
    "n_samples",
    "verdict",
    "failed_tests",
    "tested_at",
    "n_runs",
    "latest_run",
]
EVENT_FLAGS = ("gate", "drift_alarm", "reward_tests", "criteria", "request")
CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto;
       max-width: 1200px; color: #262730; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; width: 100%; }
th, td { border: 1px solid #e0e0e0; padding: 0.25rem 0.45rem; text-align: left; vertical-align: top; }
th { background: #f5f5f7; }
tr.alarm td, tr.fail td { background: #fde8e8; } tr.flag td { background: #fff7e0; }
.alarm-box { background: #fde8e8; border-left: 4px solid #d62728; padding: 0.4rem 0.8rem; margin: 0.3rem 0; }
.ok-box { background: #e8f5e9; border-left: 4px solid #2ca02c; padding: 0.4rem 0.8rem; margin: 0.3rem 0; }
td.time { white-space: nowrap; } details pre { font-size: 0.75rem; white-space: pre-wrap; max-width: 40rem; }
.muted { color: #6b6b7b; } .kv td:first-child { font-weight: 600; width: 14rem; }
"""


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4g}"
    if isinstance(v, datetime):
        return f"{v:%Y-%m-%d %H:%M:%S}"
    if isinstance(v, list | tuple):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def table(rows: list[dict], columns: list[str] | None = None, row_class=None, empty: str = "None.") -> str:
    """An HTML table of `rows` (every cell escaped); `row_class(row)` may flag a row ("alarm", "fail",
    "flag")."""
    if not rows:
        return f'<p class="muted">{html.escape(empty)}</p>'
    cols = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cls = row_class(r) if row_class else None
        cells = "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols)
        body.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Figures:
    """Figures as HTML divs; the first one carries plotly.js inline, the others reuse it."""

    def __init__(self):
        self.n = 0

    def __call__(self, fig, title: str) -> str:
        fig.update_layout(
            title=title, margin=dict(l=70, r=30, t=70, b=60)
        )  # the app's tight margins cut labels here
        fig.update_xaxes(automargin=True)
        fig.update_yaxes(automargin=True)
        out = fig.to_html(
            full_html=False, include_plotlyjs=self.n == 0, config=PLOTLY_CONFIG, div_id=f"fig-{self.n}"
        )
        self.n += 1
        return f'<div class="figure">{out}</div>'


def config_reward_version(cfg: dict) -> str | None:
    """The version of the reward a campaign config names (its content hash), computed without importing
    user code; None when it cannot be known here (a callable only a worker can load, a missing directory)."""
    from engine.config import config_from_dict
    from engine.rewards import reward_version

    try:
        return reward_version(config_from_dict(cfg).reward, import_code=False)
    except Exception:  # a moved model directory: the versions its samples were scored with still count
        return None


def campaign_versions(store, cid: str) -> list[str]:
    """Campaign `cid`'s own reward versions: those its samples were scored with, its config's reward and
    the refreshes of it (Store.campaign_reward_versions)."""
    own = config_reward_version(store.campaign(cid)["config"])
    return store.campaign_reward_versions(cid, [own] if own else [])


def drift_thresholds(cfg: dict):
    """The campaign's own drift limits: its gate's hacking checks ([gates] drift_*) and the reward-shift
    alarm of `gates.drift_reward_wasserstein`, as the drift gate and `restgov drift` apply them."""
    from engine.config import config_from_dict
    from engine.drift import DriftThresholds, hacking_thresholds

    gates = config_from_dict(cfg).gates
    return DriftThresholds(
        reward_wasserstein=gates.drift_reward_wasserstein, hacking=hacking_thresholds(gates)
    )


# (check, statistic shown, where its value is in a drift_report, the thresholds field, how it fires)
_DRIFT_CHECKS = (
    (
        "length_shift",
        "mean length b / a",
        ("hacking", "figures", "length", "ratio"),
        "hacking.length_ratio",
        "outside [1/limit, limit]",
    ),
    (
        "unique_share_drop",
        "fall of the unique share",
        ("hacking", "figures", "diversity", "unique_share_drop"),
        "hacking.unique_share_drop",
        "> limit",
    ),
    (
        "distinct_2_drop",
        "fall of distinct-2",
        ("hacking", "figures", "diversity", "distinct_2_drop"),
        "hacking.distinct_drop",
        "> limit",
    ),
    (
        "kl_budget",
        "KL from BC (nats per sample)",
        ("hacking", "figures", "kl", "nats"),
        "hacking.kl_budget",
        "> limit",
    ),
    (
        "reward_ceiling",
        "rise of the share at the reward ceiling",
        ("hacking", "figures", "ceiling", "rise"),
        "hacking.ceiling_margin",
        "> limit",
    ),
    (
        "beats_references",
        "mean reward of samples minus references",
        ("hacking", "figures", "references", "excess"),
        "hacking.reference_margin",
        "> limit",
    ),
    (
        "reward_wasserstein",
        "reward W1 / std of a",
        ("reward", "wasserstein_norm"),
        "reward_wasserstein",
        ">= limit",
    ),
    (
        "length_wasserstein",
        "length W1 / std of a",
        ("length", "wasserstein_norm"),
        "length_wasserstein",
        ">= limit",
    ),
    ("reward_ks", "reward KS p-value", ("reward", "ks_pvalue"), "ks_pvalue", "< limit"),
    ("length_ks", "length KS p-value", ("length", "ks_pvalue"), "ks_pvalue", "< limit"),
)


def _dig(d, path):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def drift_table_rows(rep: dict) -> list[dict]:
    """One row per drift check of a drift_report: the statistic, its value, the limit it is held to (None:
    reported, not alarmed), whether its alarm fired, and why a check had no value."""
    fired = {al["check"]: al for al in rep["alarms"]}
    skipped = _dig(rep, ("hacking", "skipped")) or {}
    th = rep["thresholds"]
    rows = []
    for check, label, path, limit_path, rule in _DRIFT_CHECKS:
        value, limit = _dig(rep, path), _dig(th, limit_path.split("."))
        rows.append(
            {
                "check": check,
                "statistic": label,
                "value": value,
                "threshold": limit,
                "alarm when": rule if limit is not None else "off (figure only)",
                "fired": check in fired,
                "note": skipped.get(check, ""),
            }
        )
    b = rep["b"]
    hb = next((h for h in rep.get("human") or [] if h["grow"] == b), None)
    rows.append(
        {
            "check": "human_spearman",
            "statistic": f"Spearman of reward vs human scores at grow {b}",
            "value": hb["spearman_rho"] if hb else None,
            "threshold": th.get("human_rho_min"),
            "alarm when": f"< limit with >= {th.get('human_min_pairs')} rated texts",
            "fired": "human_spearman" in fired,
            "note": "" if hb else f"no rated texts at grow {b}",
        }
    )
    return rows


def _drift(store, cid: str, cfg: dict) -> tuple[str, list[dict]]:
    """Drift statistics for the gate's comparisons (latest step against the first and the previous one)."""
    from engine.drift import default_comparisons, drift_report

    pairs = default_comparisons(store, cid)
    if not pairs:
        return (
            '<p class="muted">Drift compares two Grow steps with generated samples; '
            "this campaign has fewer.</p>",
            [],
        )
    th = drift_thresholds(cfg)
    rows, alarms, checks = [], [], []
    for a, b in pairs:
        rep = drift_report(store, cid, a, b, th)
        checks += [
            {"steps": f"grow {a} → grow {b}"} | r | {"fired": "ALARM" if r["fired"] else "no"}
            for r in drift_table_rows(rep)
        ]
        dv = rep["diversity"]
        rows.append(
            {
                "steps": f"grow {a} → grow {b}",
                "reward W1 / std": rep["reward"]["wasserstein_norm"],
                "reward KS": rep["reward"]["ks_stat"],
                "mean reward": f"{_fmt(rep['reward']['mean_a'])} → {_fmt(rep['reward']['mean_b'])}",
                "length W1 / std": rep["length"]["wasserstein_norm"],
                "mean tokens": f"{_fmt(rep['length']['mean_a'])} → {_fmt(rep['length']['mean_b'])}",
                "distinct-2": f"{_fmt(dv['a']['distinct_2'])} → {_fmt(dv['b']['distinct_2'])}",
                "unique share": f"{_fmt(dv['a']['unique_share'])} → {_fmt(dv['b']['unique_share'])}",
                "alarms": len(rep["alarms"]),
            }
        )
        alarms += rep["alarms"]
    limits = ", ".join(
        f"{k} {v}"
        for k, v in rep["thresholds"].items()
        if k.endswith(("wasserstein", "drop", "rho_min")) and v is not None
    )
    out = (
        table(rows, row_class=lambda r: "alarm" if r["alarms"] else None)
        + f'<p class="muted">Alarm thresholds: {html.escape(limits)}.</p>'
        + "<h3>Every check: statistic, value, threshold, fired?</h3>"
        + table(checks, row_class=lambda r: "alarm" if r["fired"] == "ALARM" else None)
    )
    out += (
        "".join(
            f'<div class="alarm-box"><b>Alarm</b> ({html.escape(al["metric"])}): '
            f"{html.escape(al['message'])}</div>"
            for al in alarms
        )
        or '<div class="ok-box">No drift alarm.</div>'
    )
    return out, alarms


def build_audit_report(store, cid: str) -> str:
    """The audit report of campaign `cid` as one HTML document (a str; plotly.js inline, no external URL)."""
    row = store.campaign(cid)
    if row is None:
        raise KeyError(f"no campaign {cid!r}")
    status = campaign_status(store, cid)
    fig = _Figures()
    parts = [
        f"<h1>Audit report: {html.escape(row['name'])}</h1>",
        f'<p class="muted">Campaign <code>{html.escape(cid)}</code> · generated '
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC by restgov</p>",
        "<h2>Campaign summary</h2>",
    ]
    final = status["final"]["mean_reward"]
    summary = {
        "name": row["name"],
        "id": cid,
        "mode": row["mode"],
        "state": row["state"],
        "stop reason": row["stop_reason"],
        "created": row["created_at"],
        "last change": row["updated_at"],
        "reward": row["config"].get("reward", {}).get("kind"),
        "Grow steps": len(status["grows"]),
        "compute (s)": status["compute_seconds"],
        f"final {status['final']['split'] or ''} reward": ", ".join(f"{p} {v:.4f}" for p, v in final.items())
        or None,
    }
    parts.append(
        '<table class="kv">'
        + "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in summary.items()
        )
        + "</table>"
    )
    parts += [
        "<h2>Per-step table</h2>",
        '<p class="muted">Row grow 0 is the BC baseline. kept and n_total count every pair of D_g: the '
        "generated candidates and the original pairs of D mixed in.</p>",
        table(status["steps"], STEP_COLUMNS, empty="No completed step yet."),
        table(
            [{"grow": g} | s for g, s in status["grows"].items()],
            ["grow", "n_samples", "n_generated", "mean_reward", "std_reward"],
            empty="No completed Grow step yet.",
        ),
    ]

    parts += _governance(store, cid, row, status, fig)

    parts.append("<h2>Reward distributions per Grow step</h2>")
    hist, th = store.reward_histogram(cid, 50), charts.filter_thresholds(store.filters(cid))
    if hist:
        parts += [
            fig(charts.histogram(hist, th), "Reward histogram per Grow step (dashed: Improve thresholds)"),
            fig(charts.ecdf(hist, th), "Reward ECDF per Grow step"),
        ]
        parts.append(
            table(
                [
                    f | {"share of D_g kept": f["kept"] / f["n_total"] if f["n_total"] else None}
                    for f in store.filter_counts(cid)
                ],
                ["grow", "improve", "rule", "param", "tau", "kept", "n_total", "share of D_g kept"]
                + ["kept_generated", "n_generated", "kept_reference", "n_reference"],
                empty="No Improve filter applied yet.",
            )
        )
    else:
        parts.append('<p class="muted">No scored samples yet.</p>')
    curves = [
        {"step_key": c["step_key"], "step": c["step"], "loss": c["loss"]}
        for c in store.curves(cid)
        if c["loss"] is not None
    ]
    if curves:
        parts.append(fig(charts.loss(curves), "Training loss per step"))

    drift_html, _ = _drift(store, cid, row["config"])
    parts += [
        "<h2>Drift statistics</h2>",
        drift_html,
        "<h3>Alarms and gates recorded during the campaign</h3>",
        table(
            [
                {k: e[k] for k in ("ts", "actor", "kind", "message")}
                for e in store.recent_events(cid, 1000, kinds=["drift_alarm", "gate"])
            ],
            empty="None recorded.",
        ),
    ]

    parts.append("<h2>Reward-model versions and unit tests</h2>")
    versions = campaign_versions(store, cid)
    parts.append(
        '<p class="muted">This campaign\'s own reward versions: those its samples were scored with, its '
        "config's reward and the refreshes of it; other campaigns' rewards and runs are left out.</p>"
    )
    parts.append(
        table(
            store.reward_versions(cid, versions),
            REWARD_VERSION_COLUMNS,
            row_class=lambda r: "fail" if r["verdict"] == "fail" else None,
            empty="No reward version recorded.",
        )
    )
    history = store.reward_test_history(versions)
    parts.append(
        table(
            history,
            [
                "run_id",
                "reward_version",
                "created_at",
                "verdict",
                "n_tests",
                "n_failed",
                "failed_tests",
                "n_pairs",
                "reference_set",
                "campaign",
            ],
            row_class=lambda r: "fail" if r["verdict"] == "fail" else None,
            empty="No reward test run yet.",
        )
    )
    if history:
        parts.append(
            fig(
                charts.reward_test_matrix(store.reward_test_matrix(versions=versions)),
                "Pass rate per test and run",
            )
        )

    parts.append("<h2>Rating statistics</h2>")
    parts += _ratings(store, cid, fig)

    parts.append("<h2>Event log</h2>")
    events = store.recent_events(cid, 5000)
    parts.append(
        table(
            [{k: e[k] for k in ("id", "ts", "actor", "kind", "state", "message")} for e in events],
            row_class=lambda r: "flag" if r["kind"] in EVENT_FLAGS else None,
        )
    )
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>restgov audit: {html.escape(cid)}</title>"
        f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _governance(store, cid: str, row: dict, status: dict, fig) -> list[str]:
    """The gate-check timeline (the Governance page's table), what paused the campaign, the divergence of
    reward and audit per checkpoint and per Grow step, and the final policy beside BC."""
    checks = store.gate_checks(cid)
    flagged = store.flagged_policies(cid)
    metrics = gov.audit_metrics(row["config"])
    names = [m for m, _ in metrics]
    ckpt = store.checkpoint_figures(cid)
    out = ["<h2>Governance</h2>", f"<p><b>{html.escape(gov.summary_line(checks, flagged))}</b></p>"]
    if paused := gov.paused_gate(row):
        out.append(
            f'<div class="alarm-box"><b>Paused by the {html.escape(paused[0])} gate:</b> '
            f"{html.escape(paused[1])}</div>"
        )
    out.append(gov.timeline_html(gov.timeline_rows(checks, ckpt, names)))
    if flagged:
        out.append(
            table(
                [{"checkpoint": p, "why it may not be final": m} for p, m in flagged.items()],
                row_class=lambda r: "flag",
            )
        )
    final = status["final"]
    if ckpt:
        label = "final policy"
        policy = final.get("policy")
        if policy is None:
            from engine.steps.gates import choose_final

            policy, _ = choose_final(store, cid)
            label = "final if the campaign ended now"
        out.append(
            fig(
                charts.checkpoint_divergence(gov.checkpoint_rows(ckpt), metrics, flagged, (policy, label)),
                "Validation reward and audit metrics per checkpoint (ringed: flagged by a gate; star: "
                + label
                + ")",
            )
        )
    grows = gov.grow_rows(status["grows"])
    if grows:
        out.append(
            fig(
                charts.grow_divergence(grows, gov.audit_metrics(row["config"], "samples")),
                "What each Grow step generated: reward, audit and length of its samples",
            )
        )
    out.append("<h3>Final policy</h3>")
    if final.get("policy") is None:
        out.append('<p class="muted">No final policy yet: the campaign has not finished.</p>')
    else:
        why = final.get("why") or "no reason recorded"
        out.append(f"<p><b>{html.escape(final['policy'])}</b>: {html.escape(why)}</p>")
        out.append(table(gov.final_rows(final, names)))
    return out


DIFF_NUMBERS = ("mean baseline", "mean other", "diff", "ci_low", "ci_high")


def human_diff_rows(pairs: list[dict]) -> list[dict]:
    """engine.ratings.human_eval_table rows with the per-policy means as two number columns (the table
    holds them as a {policy: mean} mapping)."""
    out = []
    for d in pairs:
        means = d.get("mean") or {}
        row = {k: v for k, v in d.items() if k != "mean"}
        row["mean baseline"] = means.get(d["baseline"])
        row["mean other"] = means.get(d["other"])
        order = ["baseline", "other", "n_tasks", "n_ratings", "n_simulated", *DIFF_NUMBERS]
        out.append({k: row[k] for k in order if k in row} | {k: v for k, v in row.items() if k not in order})
    return out


def _ratings(store, cid: str, fig) -> list[str]:
    from engine.ratings import rating_stats

    stats = rating_stats(store, cid)
    a = stats["agreement"]
    out = [
        table([stats["progress"] | {"krippendorff_alpha": a["alpha"], "reliability": a["label"]}]),
        "<h3>Human eval diff (the other policy minus its baseline, 0..6 scale)</h3>",
        table(human_diff_rows(stats["pairs"]), empty="No ratings yet."),
        "<h3>Reward vs human score per Grow step</h3>",
        table(stats["correlation"], empty="No rated samples yet."),
    ]
    rows = store.rated_rewards(cid)
    if rows:
        import plotly.express as px

        scatter = px.scatter(
            rows,
            x="reward",
            y="human",
            color=[f"Grow {r['grow']}" for r in rows],
            labels={"human": "mean human score (0..6)", "color": "Grow step"},
            height=360,
        )
        out.append(fig(scatter, "Reward vs mean human score"))
    return out
