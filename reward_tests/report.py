"""Present a SuiteReport: a plain JSON-ready dict (for --json and the store) and a rich table with the
worst examples of each failed test underneath.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .runner import SuiteReport


def to_dict(report: SuiteReport) -> dict[str, Any]:
    """Everything in the report as JSON-serialisable data, with the overall verdict and failed tests."""
    return {
        "reward_name": report.reward_name,
        "reward_version": report.reward_version,
        "verdict": report.verdict,
        "failed": report.failed,
        "n_pairs": report.n_pairs,
        "mean_reward": report.mean_reward,
        "std_measured": report.std_measured,
        "std": report.std,
        "config": report.config,
        "tests": [asdict(r) | {"passed": r.passed} for r in report.results],
    }


def _f(x: float | None, spec: str = "+.4f") -> str:
    return "" if x is None else format(x, spec)


def _clip(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def render(report: SuiteReport, console: Any = None, examples: bool = True) -> None:
    """Print the per-test table and verdict; with `examples`, the worst cases of each failing test."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    title = (
        f"reward tests: {report.reward_name} (version {report.reward_version or '-'})  "
        f"{report.n_pairs} pairs, mean reward {report.mean_reward:.4f}, std {report.std:.4g}"
    )
    t = Table(title=title, title_justify="left")
    for col, just in (
        ("test", "left"),
        ("expect", "left"),
        ("tol (std)", "right"),
        ("n", "right"),
        ("pass rate", "right"),
        ("mean delta", "right"),
        ("worst delta", "right"),
        ("verdict", "left"),
    ):
        t.add_column(col, justify=just, no_wrap=col in ("test", "expect"))  # type: ignore[arg-type]
    style = {"pass": "green", "fail": "bold red", "skip": "dim"}
    for r in report.results:
        t.add_row(
            r.name,
            r.expectation,
            f"{r.tol:.2f}",
            str(r.n),
            _f(r.pass_rate, ".0%"),
            _f(r.mean_delta),
            _f(r.worst_delta),
            f"[{style[r.verdict]}]{r.verdict}",
        )
    con.print(t)
    if report.std_measured < report.std and report.config.get("std_given") is None:
        con.print(
            f"[dim]note: the reward's std on the reference set is {report.std_measured:.2g}; "
            f"tolerances use the floor {report.std:.0e}, so any measurable change counts."
        )
    if examples:
        for r in report.results:
            if r.verdict != "fail":
                continue
            con.print(f"[bold]{r.name}[/] ({r.expectation}, tol {r.tol_abs:.4g} reward): worst examples")
            for ex in r.worst_examples:
                con.print(
                    f"  [dim]{ex['source_id']}[/] {ex['reward_original']:.4f} -> {ex['reward_perturbed']:.4f}"
                    f" ({ex['delta']:+.4f})",
                    markup=True,
                    highlight=False,
                )
                con.print(f"    original:  {_clip(ex['original'])}", markup=False, highlight=False)
                con.print(f"    perturbed: {_clip(ex['perturbed'])}", markup=False, highlight=False)
    verdict = (
        "[bold green]PASS" if report.verdict == "pass" else f"[bold red]FAIL[/] ({', '.join(report.failed)})"
    )
    con.print(f"verdict: {verdict}")
