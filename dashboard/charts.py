"""Plotly figures built from the store's already-aggregated rows (a few hundred points at most)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.colors import qualitative

COLORS = qualitative.Plotly


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def _layout(fig: go.Figure, x: str, y: str, height: int = 360) -> go.Figure:
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=30, b=10),
        xaxis_title=x,
        yaxis_title=y,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    return fig


def filter_thresholds(filters: list[dict]) -> list[dict]:
    """The store's Improve filters with their kept share and `tau_drawn`, where a chart draws the filter: its
    global tau (thresholds, quantile), or 1.0 for the binary rule (keeps R = 1); per-source rules have
    none."""
    out = []
    for f in filters:
        tau = f["tau"] if f["tau"] is not None else (1.0 if f["rule"] == "binary" else None)
        out.append(f | {"tau_drawn": tau, "share": f["kept"] / f["n_total"] if f["n_total"] else None})
    return out


def _thresholds(fig: go.Figure, thresholds: list[dict]) -> None:
    """Improve thresholds as dashed lines, one per distinct tau, labelled with each step's share of D_g
    kept."""
    by_tau: dict[float, list[str]] = {}
    for t in thresholds:
        if t.get("tau_drawn") is not None:
            share = f"{t['share']:.1%}" if t.get("share") is not None else "?"
            of = f" of {t['share_of']}" if t.get("share_of") else ""
            label = f"g{t['grow']}-i{t['improve']} kept {share}{of}"
            by_tau.setdefault(round(t["tau_drawn"], 6), []).append(label)
    for j, (tau, labels) in enumerate(sorted(by_tau.items())):
        fig.add_vline(
            x=tau,
            line_dash="dash",
            line_color="#444",
            opacity=0.7,
            annotation_text=f"τ={tau:g}: " + ", ".join(labels),
            annotation_font_size=11,
            annotation_position="top left" if tau > 0.5 else "top right",
            annotation_y=1 - 0.08 * j,
        )


def histogram(rows: list[dict], thresholds: list[dict], of: str = "D_g") -> go.Figure:
    """Per Grow step, the share of `of` (D_g, or the generated candidates alone) in each reward bin."""
    grows = sorted({r["grow"] for r in rows})
    fig = go.Figure()
    for i, g in enumerate(grows):
        pts = [r for r in rows if r["grow"] == g]
        fig.add_bar(
            x=[(r["lo"] + r["hi"]) / 2 for r in pts],
            y=[r["share"] for r in pts],
            width=[r["hi"] - r["lo"] for r in pts],
            name=f"Grow {g}",
            marker_color=_color(i),
            opacity=0.55,
            customdata=[r["n"] for r in pts],
            hovertemplate="reward %{x:.3f}<br>share %{y:.2%}<br>n %{customdata:,}",
        )
    fig.update_layout(barmode="overlay")
    _thresholds(fig, thresholds)
    fig.update_xaxes(range=[0, 1])
    return _layout(fig, "reward", f"share of {of}")


def ecdf(rows: list[dict], thresholds: list[dict], of: str = "D_g") -> go.Figure:
    grows = sorted({r["grow"] for r in rows})
    fig = go.Figure()
    for i, g in enumerate(grows):
        pts = [r for r in rows if r["grow"] == g]
        fig.add_scatter(
            x=[pts[0]["lo"]] + [r["hi"] for r in pts],
            y=[0.0] + [r["ecdf"] for r in pts],
            mode="lines",
            line_shape="hv",
            name=f"Grow {g}",
            line_color=_color(i),
        )
    _thresholds(fig, thresholds)
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    return _layout(fig, "reward", f"share of {of} with reward < x")


def source_bands(bands: list[dict]) -> go.Figure:
    n = len(bands) or 1
    x = [(b["band"] - 0.5) / n * 100 for b in bands]
    fig = go.Figure()
    fig.add_scatter(
        x=x, y=[b["p90"] for b in bands], mode="lines", line_width=0, showlegend=False, hoverinfo="skip"
    )
    fig.add_scatter(
        x=x,
        y=[b["p10"] for b in bands],
        mode="lines",
        line_width=0,
        fill="tonexty",
        fillcolor="rgba(99,110,250,0.25)",
        name="p10 to p90 of a source's candidates",
    )
    fig.add_scatter(x=x, y=[b["p50"] for b in bands], mode="lines", name="median", line_color=_color(0))
    fig.add_scatter(
        x=x,
        y=[b["max"] for b in bands],
        mode="lines",
        name="best candidate",
        line_color=_color(2),
        line_dash="dot",
    )
    return _layout(fig, "sources ranked by median reward (percentile)", "reward")


def reward_vs_length(view: dict) -> go.Figure:
    cells, rb = view["cells"], view["reward_bins"]
    lens = sorted({c["len_lo"] for c in cells})
    width = cells[0]["width"] if cells else 1
    z = [[0] * len(lens) for _ in range(rb)]
    for c in cells:
        z[c["rbin"]][lens.index(c["len_lo"])] = c["n"]
    fig = go.Figure()
    fig.add_heatmap(
        x=[lo + width / 2 for lo in lens],
        y=[(i + 0.5) / rb for i in range(rb)],
        z=z,
        colorscale="Blues",
        colorbar_title="candidates",
        hovertemplate="tokens %{x}<br>reward %{y:.2f}<br>n %{z:,}<extra></extra>",
    )
    by = view["by_length"]
    fig.add_scatter(
        x=[b["len_lo"] + b["width"] / 2 for b in by],
        y=[b["mean_reward"] for b in by],
        mode="lines+markers",
        name="mean reward",
        line_color="#d62728",
    )
    return _layout(fig, "output length (tokens)", "reward")


def best_of_n(curves: dict[str, dict[int, float]]) -> go.Figure:
    fig = go.Figure()
    for i, (name, pts) in enumerate(curves.items()):
        ns = sorted(pts)
        fig.add_scatter(x=ns, y=[pts[n] for n in ns], mode="lines+markers", name=name, line_color=_color(i))
    ns = sorted({n for pts in curves.values() for n in pts})
    fig.update_xaxes(type="log", tickvals=ns, ticktext=[str(n) for n in ns])
    return _layout(fig, "N (samples per source, best one kept by the reward)", "mean reward")


def loss(points: list[dict]) -> go.Figure:
    fig = go.Figure()
    for i, key in enumerate(dict.fromkeys(p["step_key"] for p in points)):
        pts = [p for p in points if p["step_key"] == key]
        fig.add_scatter(
            x=[p["step"] for p in pts],
            y=[p["loss"] for p in pts],
            mode="lines",
            name=key,
            line_color=_color(i),
        )
    return _layout(fig, "optimizer step", "training loss", height=260)


def reward_test_matrix(rows: list[dict]) -> go.Figure:
    """Pass rate of each unit test (rows) in each run (columns, oldest first, labelled by reward version)."""
    runs = list(dict.fromkeys(r["run_id"] for r in rows))
    tests = list(dict.fromkeys(r["test"] for r in sorted(rows, key=lambda r: r["pos"])))
    first = {r["run_id"]: r for r in rows}
    labels = [
        f"{first[run]['reward_version'][:12]}<br>{first[run]['created_at']:%m-%d %H:%M} #{k + 1}"
        for k, run in enumerate(runs)
    ]
    z = [[None] * len(runs) for _ in tests]
    for r in rows:
        z[tests.index(r["test"])][runs.index(r["run_id"])] = r["pass_rate"]
    fig = go.Figure()
    fig.add_heatmap(
        x=labels,
        y=tests,
        z=z,
        zmin=0,
        zmax=1,
        colorscale="RdYlGn",
        colorbar_title="pass rate",
        texttemplate="%{z:.0%}",
        hovertemplate="%{y}<br>%{x}<br>pass rate %{z:.1%}<extra></extra>",
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "run (reward version, time)", "", height=max(260, 28 * len(tests) + 120))


def _marks(fig: go.Figure, rows: list[dict], row_of: dict, flagged: dict[str, str], final: tuple) -> None:
    """Open red rings on flagged checkpoints and a star on the final policy, in every panel of `row_of`
    ({panel row: (trace name, value of a row)}); each legend entry once."""
    final_policy, final_label = final
    for k, (panel, value) in enumerate(row_of.items()):
        pts = [(r["policy"], value(r)) for r in rows if value(r) is not None]
        bad = [(p, v) for p, v in pts if p in flagged]
        if bad:
            fig.add_scatter(
                x=[p for p, _ in bad],
                y=[v for _, v in bad],
                mode="markers",
                marker=dict(symbol="circle-open", size=20, color="#d62728", line=dict(width=2.5)),
                name="flagged by a gate (not eligible as final)",
                legendgroup="flagged",
                showlegend=k == 0,
                customdata=[flagged[p] for p, _ in bad],
                hovertemplate="%{x} flagged: %{customdata}<extra></extra>",
                row=panel,
                col=1,
            )
        fin = [(p, v) for p, v in pts if p == final_policy]
        if fin:
            fig.add_scatter(
                x=[p for p, _ in fin],
                y=[v for _, v in fin],
                mode="markers",
                marker=dict(symbol="star", size=18, color="#f2b701", line=dict(width=1, color="#444")),
                name=final_label,
                legendgroup="final",
                showlegend=k == 0,
                hovertemplate=f"%{{x}}: {final_label}<extra></extra>",
                row=panel,
                col=1,
            )


def checkpoint_divergence(
    rows: list[dict],
    metrics: list[tuple[str, str]],
    flagged: dict[str, str],
    final: tuple[str | None, str] = (None, "final policy"),
) -> go.Figure:
    """Per checkpoint (rows in training order: {policy, reward, tokens, audit: {metric: mean}}), the mean
    validation reward (top) against each audit metric of the same outputs (bottom, `metrics` as (name, axis
    label)); flagged checkpoints ringed, the final policy (`final` = (policy, legend label)) starred."""
    from plotly.subplots import make_subplots

    panels = 2 if metrics else 1
    fig = make_subplots(rows=panels, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    x = [r["policy"] for r in rows]
    fig.add_scatter(
        x=x,
        y=[r["reward"] for r in rows],
        mode="lines+markers",
        name="mean reward",
        line_color=_color(0),
        hovertemplate="%{x}: mean reward %{y:.4f}<extra></extra>",
        row=1,
        col=1,
    )
    for i, (name, _) in enumerate(metrics):
        fig.add_scatter(
            x=x,
            y=[r["audit"].get(name) for r in rows],
            mode="lines+markers",
            name=name,
            line_color=_color(i + 1),
            hovertemplate=f"%{{x}}: {name} %{{y:.4f}}<extra></extra>",
            row=2,
            col=1,
        )
    row_of = {1: lambda r: r["reward"]}
    if metrics:
        first = metrics[0][0]
        row_of[2] = lambda r: r["audit"].get(first)
    _marks(fig, rows, row_of, flagged, final)
    fig.update_yaxes(title_text="mean reward of greedy validation outputs", row=1, col=1)
    if metrics:
        label = metrics[0][1] if len(metrics) == 1 else "audit metrics of the same outputs"
        fig.update_yaxes(title_text=label, row=2, col=1)
    fig.update_xaxes(
        title_text="checkpoint (base = the BC policy, gG-iI = Improve step I of Grow step G)",
        type="category",
        row=panels,
        col=1,
    )
    fig.update_layout(
        height=260 + 200 * panels,
        margin=dict(l=10, r=10, t=50, b=10),
        title="Validation reward and audit metrics per checkpoint",
        legend=dict(title_text="measure"),
    )
    return fig


def grow_divergence(rows: list[dict], metrics: list[tuple[str, str]]) -> go.Figure:
    """Per Grow step (rows {grow, policy, n, reward, tokens, audit: {metric: mean}} over its generated
    samples): mean reward, each audit metric and mean length, one panel each."""
    from plotly.subplots import make_subplots

    panels = [("mean reward of the generated Grow samples", lambda r: r["reward"], "mean reward")]
    panels += [(label, (lambda r, m=name: r["audit"].get(m)), name) for name, label in metrics]
    panels.append(("mean tokens per generated sample", lambda r: r["tokens"], "mean tokens"))
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.22 / len(panels),
        subplot_titles=[label for label, _, _ in panels],
    )
    fig.update_annotations(font_size=12, x=0, xanchor="left")
    x = [f"Grow {r['grow']} (sampled by {r['policy']})" for r in rows]
    for i, (_, value, name) in enumerate(panels):
        fig.add_scatter(
            x=x,
            y=[value(r) for r in rows],
            mode="lines+markers",
            name=name,
            line_color=_color(i),
            customdata=[r["n"] for r in rows],
            hovertemplate=f"%{{x}}<br>{name} %{{y:.4f}}<br>%{{customdata:,}} samples<extra></extra>",
            row=i + 1,
            col=1,
        )
        fig.update_yaxes(title_text=name, row=i + 1, col=1)
    fig.update_xaxes(title_text="Grow step (the policy that generated it)", type="category", row=len(panels))
    fig.update_layout(
        height=160 + 170 * len(panels),
        margin=dict(l=10, r=10, t=50, b=10),
        title="What each Grow step generated: reward, audit and length of its samples",
        legend=dict(title_text="measure"),
    )
    return fig
