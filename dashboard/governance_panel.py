"""Governance page parts, and the timeline the HTML audit report shares with it.

The gate checks come from `store.gate_checks` (engine/store/gates.py), each with the figures its gate looked
at; `timeline_rows` flattens the figures that matter (reward delta, audit delta per metric, length ratio,
KL, ratings) into columns, and `timeline_html` draws them with a coloured status badge and every check's
full figures in a <details> block, the same markup on the page and in the downloadable report.
"""

from __future__ import annotations

import html
import json
import math
from datetime import datetime

import streamlit as st

from dashboard import charts

# Badge style per status: pass green, fail red, override amber, flag red outline (inline: the report's
# file and the page's sanitised HTML both keep it).
BADGE = {
    "pass": "background:#188038;color:#fff;border:1.5px solid #188038",
    "fail": "background:#d93025;color:#fff;border:1.5px solid #d93025",
    "override": "background:#f9ab00;color:#202124;border:1.5px solid #e37400",
    "flag": "background:transparent;color:#d93025;border:1.5px solid #d93025",
}
BADGE_BASE = "display:inline-block;padding:0 0.5em;border-radius:0.8em;font-size:0.8em;font-weight:600"
STATUS_HELP = {
    "pass": "the gate passed",
    "fail": "the gate failed (the campaign paused or stopped there)",
    "override": "the gate failed and an operator let it through once",
    "flag": "the checkpoint may not be the final policy",
}
# Audit kinds scored against the split's references (what the chart's axis label says).
AGAINST_REFERENCES = {"chrf": "chrF", "exact_match": "exact match", "numeric": "numeric-answer match"}
CSS = """
<style>
.gov-timeline { overflow-x: auto; max-height: 36rem; overflow-y: auto; }
.gov-timeline table { border-collapse: collapse; font-size: 0.85rem; width: 100%; }
.gov-timeline th, .gov-timeline td { border-bottom: 1px solid rgba(128,128,128,0.25); padding: 0.3rem 0.45rem;
  text-align: left; vertical-align: top; }
.gov-timeline th { position: sticky; top: 0; background: rgba(240,242,246,0.97); color: #262730; }
.gov-timeline td.time { white-space: nowrap; }
.gov-timeline td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
.gov-timeline pre { font-size: 0.75rem; max-width: 40rem; white-space: pre-wrap; }
</style>
"""


# ---------------------------------------------------------------- data (no Streamlit)
def audit_metrics(config: dict, of: str = "outputs") -> list[tuple[str, str]]:
    """The campaign's [[audit]] metrics as (name, what an axis says it counts), measured on the same `of`
    (outputs, samples) as the reward beside it."""
    out = []
    for m in config.get("audit") or []:
        kind = m.get("kind", "")
        name = m.get("name") or kind
        if kind in AGAINST_REFERENCES:
            label = f"{AGAINST_REFERENCES[kind]} of the same {of} against the references"
            if name != kind:
                label = f"{name}: {label}"
        else:
            label = f"{name} ({kind} score) of the same {of}"
        out.append((name, label))
    return out


def policy_key(policy: str) -> tuple:
    """Training order of checkpoint ids: base, then g1-i1, g1-i2, g2-i1, ... (anything else last)."""
    if policy == "base":
        return (0, 0, "")
    g, _, i = policy.removeprefix("g").partition("-i")
    return (int(g), int(i), "") if g.isdigit() and i.isdigit() else (math.inf, 0, policy)


def checkpoint_rows(figures: dict[str, dict]) -> list[dict]:
    """`store.checkpoint_figures` as rows in training order."""
    return [{"policy": p} | figures[p] for p in sorted(figures, key=policy_key)]


def _worst(comparisons: dict) -> tuple[str, dict]:
    """The comparison whose audit metric fell most (the one that matters for the verdict)."""

    def fall(item):
        deltas = [d for d in (item[1].get("audit_delta") or {}).values() if d is not None]
        return min(deltas) if deltas else math.inf

    return min(comparisons.items(), key=fall)


def flatten(check: dict, ckpt: dict[str, dict]) -> dict:
    """The figures of one check that a reader compares, as flat columns: what was compared, reward delta,
    audit delta per metric, length ratio, KL, ratings, human eval diff (absent: not what this gate reads)."""
    f = check.get("figures") or {}
    out: dict = {}
    if check["gate"] == "audit":
        if f.get("comparisons"):
            name, c = _worst(f["comparisons"])
            out = {
                "compared": name
                + (f" (worst of {len(f['comparisons'])})" if len(f["comparisons"]) > 1 else ""),
                "reward_delta": c.get("reward_delta"),
                "audit_delta": c.get("audit_delta") or {},
                "length_ratio": c.get("length_ratio"),
            }
        elif "reward_delta" in f:  # a checkpoint's validation figures against the BC policy's
            policy = f.get("policy") or check.get("policy")
            a, b = ckpt.get("base", {}), ckpt.get(policy, {})
            ratio = b["tokens"] / a["tokens"] if a.get("tokens") and b.get("tokens") is not None else None
            out = {
                "compared": f"{policy} vs base on validation",
                "reward_delta": f["reward_delta"],
                "audit_delta": f.get("audit_delta") or {},
                "length_ratio": ratio,
            }
    elif check["gate"] == "drift" and f.get("figures"):
        d = f["figures"]
        rew = d.get("mean_reward") or {}
        kl = d.get("kl") if isinstance(d.get("kl"), dict) else {}
        out = {
            "compared": f"grow {f.get('b')} vs grow {f.get('a')}",
            "reward_delta": rew["b"] - rew["a"]
            if rew.get("a") is not None and rew.get("b") is not None
            else None,
            "length_ratio": (d.get("length") or {}).get("ratio"),
            "kl": kl.get("nats"),
        }
    elif check["gate"] == "human" and "n_ratings" in f:
        out = {
            "compared": f"{f.get('policy')} vs base, rated",
            "ratings": f"{f['n_ratings']} of {f.get('min_ratings')}",
            "human_diff": f.get("diff"),
        }
    elif check["gate"] == "reward_tests" and "failed" in f:
        out = {"compared": f"reward {str(f.get('reward_version', ''))[:12]}", "failed_tests": f["failed"]}
    return out


def timeline_rows(checks: list[dict], ckpt: dict[str, dict], metrics: list[str]) -> list[dict]:
    """One row per gate check, in the order they ran, with the flattened figures."""
    rows = []
    for n, c in enumerate(checks, 1):
        fl = flatten(c, ckpt)
        row = {
            "#": n,
            "time": c["ts"],
            "stage": c["stage"],
            "grow": c["grow"],
            "gate": c["gate"],
            "status": c["status"],
            "checkpoint": c.get("policy"),
            "compared": fl.get("compared"),
            "reward Δ": fl.get("reward_delta"),
        }
        deltas = fl.get("audit_delta") or {}
        for m in list(metrics) + [m for m in deltas if m not in metrics]:
            row[f"{m} Δ"] = deltas.get(m)
        row |= {
            "length ratio": fl.get("length_ratio"),
            "KL (nats)": fl.get("kl"),
            "ratings": fl.get("ratings"),
            "human diff": fl.get("human_diff"),
            "failed tests": ", ".join(fl.get("failed_tests") or []) or None,
            "message": c["message"],
            "by": c["actor"],
            "figures": c.get("figures") or {},
        }
        rows.append(row)
    return rows


def summary_line(checks: list[dict], flagged: dict[str, str]) -> str:
    n = len(checks)
    failed = sum(c["status"] == "fail" for c in checks)
    overridden = sum(c["status"] == "override" for c in checks)
    names = ", ".join(sorted(flagged, key=policy_key)) or "none"
    return (
        f"{n} check{'s' * (n != 1)}, {failed} failed, {overridden} overridden, flagged checkpoints: {names}"
    )


def _cell(column: str, v) -> tuple[str, str]:
    """(text, css class) of one cell."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "", ""
    if column.endswith(" Δ") or column == "human diff":
        return f"{v:+.4f}", "num"
    if column == "length ratio":
        return f"×{v:.2f}", "num"
    if isinstance(v, float):
        return f"{v:.4g}", "num"
    if isinstance(v, datetime):
        return f"{v:%Y-%m-%d %H:%M:%S}", "time"
    return str(v), "num" if isinstance(v, int) else ""


def badge(status: str) -> str:
    style = BADGE.get(status, "border:1.5px solid #888")
    tip = html.escape(STATUS_HELP.get(status, status))
    return f'<span class="gov-badge" title="{tip}" style="{BADGE_BASE};{style}">{html.escape(status)}</span>'


def timeline_html(rows: list[dict]) -> str:
    """The timeline as an HTML table: a badge per status, the full figures of each check folded in a
    <details> block; columns no check fills are left out."""
    if not rows:
        return '<p class="muted">No gate check has run yet.</p>'
    always = ("#", "time", "stage", "grow", "gate", "status", "message")
    cols = [c for c in rows[0] if c != "figures" and (c in always or any(r.get(c) is not None for r in rows))]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "<th>figures</th>"
    body = []
    for r in rows:
        cells = []
        for c in cols:
            if c == "status":
                cells.append(f"<td>{badge(r['status'])}</td>")
                continue
            text, cls = _cell(c, r.get(c))
            cells.append(
                f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>"
            )
        figures = html.escape(json.dumps(r["figures"], indent=1, default=str, sort_keys=True))
        cells.append(f"<td><details><summary>all figures</summary><pre>{figures}</pre></details></td>")
        body.append(
            f'<tr data-gate="{html.escape(r["gate"])}" data-status="{html.escape(r["status"])}">'
            + "".join(cells)
            + "</tr>"
        )
    return (
        f'<div class="gov-timeline"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def paused_gate(row: dict) -> tuple[str, str] | None:
    """(gate, message) when a gate paused the campaign (stop_reason "gate NAME: message"), else None."""
    reason = row.get("stop_reason") or ""
    if row.get("state") != "PAUSED" or not reason.startswith("gate "):
        return None
    gate, _, message = reason.removeprefix("gate ").partition(":")
    return gate.strip(), message.strip()


def same_pass(checks: list[dict], check: dict) -> list[dict]:
    """The checks that ran together with `check`: its neighbours at the same stage and Grow, each gate
    once (a resumed campaign runs the same point's gates again)."""
    i = checks.index(check)
    point = (check["stage"], check["grow"])
    seen = {check["gate"]}
    lo = hi = i
    while lo > 0 and (checks[lo - 1]["stage"], checks[lo - 1]["grow"]) == point:
        if checks[lo - 1]["gate"] in seen:
            break
        lo -= 1
        seen.add(checks[lo]["gate"])
    while hi + 1 < len(checks) and (checks[hi + 1]["stage"], checks[hi + 1]["grow"]) == point:
        if checks[hi + 1]["gate"] in seen:
            break
        hi += 1
        seen.add(checks[hi]["gate"])
    return checks[lo : hi + 1]


def final_rows(final: dict, metrics: list[str]) -> list[dict]:
    """The BC policy and the final policy side by side on the final evaluation's split."""
    split = final.get("split") or "test"
    out = []
    for policy, role in (("base", "BC baseline"), (final.get("policy"), "final policy")):
        if policy is None or (out and policy == "base"):
            continue
        audit = (final.get("audit") or {}).get(policy, {})
        out.append(
            {
                "policy": policy,
                "role": role
                if policy != "base" or final.get("policy") != "base"
                else "BC baseline and final",
                f"{split} reward": (final.get("mean_reward") or {}).get(policy),
                **{f"{split} {m}": audit.get(m) for m in metrics},
                "mean tokens": (final.get("mean_tokens") or {}).get(policy),
            }
        )
    return out


def grow_rows(grows: dict) -> list[dict]:
    """campaign_status's grows as chart rows over generated samples."""
    return [
        {
            "grow": g,
            "policy": s.get("policy"),
            "n": s.get("n_generated") or 0,
            "reward": s.get("generated_mean_reward"),
            "tokens": s.get("mean_tokens"),
            "audit": s.get("audit") or {},
        }
        for g, s in sorted(grows.items())
        if s.get("generated_mean_reward") is not None
    ]


# ---------------------------------------------------------------- page parts
def _resume(svc, cid: str, user: dict, gates: tuple[str, ...]) -> None:
    if svc.start(cid, user["name"], gates):
        what = f"overriding the {gates[0]} gate once" if gates else "checking the gates again"
        st.session_state.gov_msg = f"Resumed, {what} (logged with your name)."
    else:
        st.session_state.gov_msg = "Not resumed: the campaign is running or finished."


def paused_box(svc, cid: str, row: dict, checks: list[dict], user: dict) -> None:
    """What paused the campaign, the check behind it, and what the operator can do about it."""
    from dashboard.auth import PAGES

    paused = paused_gate(row)
    if paused is None:
        return
    gate, message = paused
    waiting = gate == "human" and message.startswith("waiting for")
    fails = [c for c in checks if c["gate"] == gate and c["status"] == "fail"]
    last = fails[-1] if fails else None
    with st.container(border=True, key="gov_paused"):
        st.error(f"**Paused by the {gate} gate:** {message}", icon=":material/pan_tool:")
        if last is not None:
            where = f"{last['stage']}" + (f" {last['grow']}" if last["grow"] is not None else "")
            also = [c for c in same_pass(checks, last) if c is not last and c["status"] == "fail"]
            st.caption(
                f"Check #{checks.index(last) + 1} ({where}"
                + (f", checkpoint {last['policy']}" if last["policy"] else "")
                + ") in the timeline below holds the figures."
                + "".join(f" The {c['gate']} gate failed at the same point too: {c['message']}" for c in also)
            )
        running = svc.running(cid)
        if running:
            st.info("The controller is running the campaign again.", icon=":material/autorenew:")
            return
        if waiting:
            st.info(
                "The campaign resumes by itself once the ratings are in: the server checks every few "
                "seconds. Annotators and operators rate the outputs on the Rate page.",
                icon=":material/hourglass_top:",
            )
            if user["role"] in PAGES["rate"]["roles"]:
                st.page_link(PAGES["rate"]["file"], label="Rate the outputs now", icon=PAGES["rate"]["icon"])
        if user["role"] not in PAGES["campaigns"]["roles"]:
            st.caption(
                "An operator can let this gate through once (logged with their name) or change the gate "
                "criteria on the Stopping criteria page."
            )
            return
        st.markdown(
            f"Let the **{gate}** gate through once (the override is a check of its own in the timeline "
            "and an event with your name), or change the criteria and resume to check the gates again."
        )
        c1, c2, c3 = st.columns([2, 2, 2])
        c1.button(
            f"Resume, overriding the {gate} gate once",
            key="gov_override",
            type="primary",
            icon=":material/gavel:",
            on_click=_resume,
            args=(svc, cid, user, (gate,)),
            help="Only this gate, only at its next check; another failing gate still pauses.",
        )
        c2.button(
            "Resume, checking the gates again",
            key="gov_resume",
            icon=":material/play_arrow:",
            on_click=_resume,
            args=(svc, cid, user, ()),
            help="After a change of the criteria on the Stopping criteria page.",
        )
        with c3:
            st.page_link(
                PAGES["stopping"]["file"], label="Change the gate criteria", icon=PAGES["stopping"]["icon"]
            )


def timeline(rows: list[dict]) -> None:
    st.html(CSS + timeline_html(rows))


def divergence(store, cid: str, status: dict, metrics: list[tuple[str, str]], flagged: dict) -> None:
    ckpt = checkpoint_rows(store.checkpoint_figures(cid))
    final = status["final"].get("policy")
    label = "final policy"
    if final is None and any(r["reward"] is not None for r in ckpt):
        from engine.steps.gates import choose_final

        final, _ = choose_final(store, cid)
        label = "final if the campaign ended now"
    if ckpt:
        st.plotly_chart(
            charts.checkpoint_divergence(ckpt, metrics, flagged, (final, label)), key="gov_checkpoints"
        )
    else:
        st.info("No checkpoint has validation figures yet.")
    grows = grow_rows(status["grows"])
    if grows:
        samples = audit_metrics(store.campaign(cid)["config"], "samples")
        st.plotly_chart(charts.grow_divergence(grows, samples), key="gov_grows")
    else:
        st.info("No Grow step has finished yet: this chart shows finished Grow steps only.")


def final_section(store, cid: str, status: dict, metrics: list[str]) -> None:
    final = status["final"]
    if final.get("policy") is None and final.get("mean_reward"):
        st.info(
            "This campaign's final evaluation recorded no choice of final policy; the policies it scored:"
        )
        st.dataframe(
            [{"policy": p, f"{final.get('split')} reward": v} for p, v in final["mean_reward"].items()],
            hide_index=True,
            key="gov_final",
        )
        return
    if final.get("policy") is None:
        if not store.checkpoint_figures(cid):
            st.info("No final policy yet: no checkpoint has a validation reward.")
            return
        from engine.steps.gates import choose_final

        policy, why = choose_final(store, cid)
        st.info(
            f"No final policy yet: it is chosen when the campaign ends, the best validation reward among "
            f"the checkpoints no audit or drift check failed on. If it ended now: **{policy}** ({why}).",
            icon=":material/pending:",
        )
        return
    st.markdown(f"**Final policy: `{final['policy']}`** · {final.get('why') or 'no reason recorded'}")
    rows = final_rows(final, metrics)
    split = final.get("split") or "test"
    if len(rows) == 2:
        base, fin = rows
        cols = st.columns(1 + len(metrics) + 1)
        for col, key in zip(cols, [f"{split} reward", *[f"{split} {m}" for m in metrics], "mean tokens"]):
            v, b = fin.get(key), base.get(key)
            col.metric(
                f"{key} (final vs BC)",
                f"{v:.4f}" if v is not None else "–",
                f"{v - b:+.4f}" if v is not None and b is not None else None,
                delta_color="off" if key == "mean tokens" else "normal",
            )
    st.dataframe(rows, hide_index=True, key="gov_final")


# ---------------------------------------------------------------- rating tasks (operators)
FROM_VALIDATION, FROM_SAMPLES = "Validation outputs (greedy)", "Grow samples (training sources)"
REFERENCE = "reference"


def gate_pair(policies: dict[str, list[str]]) -> str | None:
    """The policy the one-click tasks put beside BC: the latest checkpoint with validation outputs (what the
    human gate rates); None while BC is the only one."""
    val = policies["validation"]
    later = [p for p in val if p != "base"]
    return later[-1] if "base" in val and later else None


def _created(out: dict, pair: str) -> None:
    existing = f"; {out['n_existing']} existed already" if out.get("n_existing") else ""
    if out["n_tasks"]:
        st.success(
            f"{out['n_tasks']} rating tasks created for {pair}{existing}. Annotators rate them on Rate."
        )
    else:
        st.info(f"No new task for {pair}: every common source is tasked already{existing}.")


def rating_tasks_form(store, cid: str) -> None:
    """Operators: build blind side-by-side rating tasks. One click pairs BC with the latest checkpoint on
    validation sources (store.create_gate_tasks, as the human gate does); a custom pair offers only the
    policies that have outputs of the chosen kind, so every pair offered can be built."""
    pol = store.rateable_policies(cid)
    c1, c2 = st.columns(2)
    n = c1.number_input("Tasks", 1, 1000, 20, key="gov_rate_n")
    req = c2.number_input("Ratings per task", 1, 10, 3, key="gov_rate_req")
    latest = gate_pair(pol)
    label = f"BC (base) vs latest checkpoint {latest} on validation sources" if latest else None
    if st.button(
        f"Create tasks: {label}" if latest else "Create tasks: BC vs latest checkpoint on validation sources",
        key="gov_rate_default",
        type="primary",
        icon=":material/add_task:",
        disabled=latest is None,
    ):
        try:
            _created(
                store.create_gate_tasks(cid, latest, baseline="base", n=int(n), required_ratings=int(req)),
                label,
            )
        except (ValueError, KeyError) as e:
            st.error(str(e), icon=":material/error:")
    if latest is None:
        st.caption(
            "Needs validation outputs of BC and of a later checkpoint: they are written after bootstrap and "
            "after each Improve."
        )
    st.markdown("**Another pair**")
    origin = st.radio(
        "Candidates from", (FROM_VALIDATION, FROM_SAMPLES), horizontal=True, key="gov_rate_origin"
    )
    have = pol["validation" if origin == FROM_VALIDATION else "samples"]
    options = [REFERENCE, *have]
    if not have:
        st.caption(
            "No policy has "
            + ("validation outputs" if origin == FROM_VALIDATION else "generated samples")
            + " in this campaign yet."
        )
        return
    base = "base" if "base" in have and len(have) > 1 else REFERENCE
    c1, c2 = st.columns(2)
    pa = c1.selectbox("Baseline policy", options, index=options.index(base), key=f"gov_rate_pa_{origin}")
    others = [p for p in options if p != pa]
    pb = c2.selectbox("Policy under review", others, index=len(others) - 1, key=f"gov_rate_pb_{origin}")
    st.caption(
        "Only policies with "
        + ("validation outputs" if origin == FROM_VALIDATION else "generated Grow samples")
        + f" are offered ({', '.join(have)}; `reference` is the human reference). Which policy is side A of "
        "a task, and the order each annotator sees the two in, are drawn at random."
    )
    if st.button("Create tasks for this pair", key="gov_rate_custom"):
        try:
            if origin == FROM_VALIDATION:
                out = store.create_gate_tasks(cid, pb, baseline=pa, n=int(n), required_ratings=int(req))
            else:
                out = store.create_rating_tasks(cid, pa, pb, int(n), int(req))
            _created(out, f"{pa} vs {pb}")
        except (ValueError, KeyError) as e:
            st.error(str(e), icon=":material/error:")
