"""What a reward-model unit test expects of the reward change delta = reward(perturbed) - reward(original),
with the tolerance given in units of the reward's standard deviation on the reference set.
"""

from __future__ import annotations

from dataclasses import dataclass

from .perturbations import Perturbation

EXPECTATIONS = {
    "invariant": "|delta| <= tol",  # the change should not matter to a good reward
    "not_rise": "delta <= tol",  # the change must not be rewarded
    "fall": "delta <= -tol",  # the change must cost reward, by at least tol
}
MIN_STD = 1e-3  # below this the reward is constant on the reference set: its std is no unit
# The unit when the reward is constant on the reference set (an exact reward, chrF or a verifier, scored on
# the references themselves gives each 1.0): a tenth of a [0, 1] reward's range, so an invariance test
# allows a change of 0.05 at tol 0.5 and a direction test asks for a fall of 0.1 at tol 1.0.
ZERO_STD_UNIT = 0.1


@dataclass(frozen=True)
class RewardTest:
    """A named perturbation with an expectation on the reward change and a tolerance in std units."""

    name: str  # unique in a suite; the key in reports and in the store
    perturb: Perturbation  # (source, candidate, rng) -> perturbed text, or None when not applicable
    expect: str = "not_rise"  # one of EXPECTATIONS
    tol: float = 0.25  # in units of the reward's std on the reference set, before the global tol_scale
    description: str = ""  # one line for reports; defaults to the perturbation's docstring

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"reward test name {self.name!r}: use letters, digits, '_' or '-'")
        if self.expect not in EXPECTATIONS:
            raise ValueError(
                f"reward test {self.name!r}: expect={self.expect!r}, not one of {list(EXPECTATIONS)}"
            )
        if not self.tol >= 0:
            raise ValueError(f"reward test {self.name!r}: tol={self.tol!r} must be >= 0 (std units)")
        if not callable(self.perturb):
            raise ValueError(
                f"reward test {self.name!r}: perturb is {type(self.perturb).__name__}, not callable"
            )
        if not self.description:
            doc = (getattr(self.perturb, "__doc__", None) or "").strip().splitlines()
            object.__setattr__(self, "description", doc[0] if doc else "")


def holds(expect: str, delta: float, tol_abs: float) -> bool:
    """Whether one sample's reward change meets the expectation, with the tolerance in reward units."""
    if expect == "invariant":
        return abs(delta) <= tol_abs
    if expect == "not_rise":
        return delta <= tol_abs
    if expect == "fall":
        return delta <= -tol_abs
    raise ValueError(f"unknown expectation {expect!r}")


def badness(expect: str, delta: float) -> float:
    """How far a change goes against the expectation; larger is worse (used to pick the worst examples)."""
    return abs(delta) if expect == "invariant" else delta
