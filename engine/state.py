"""Campaign states. A state is stored as its text; unit states carry their step numbers (`GROW(2)`).

CREATED -> BOOTSTRAP -> GROW(g) -> GATES(g) -> IMPROVE(g, i) -> ... -> EVAL(final) -> DONE | STOPPED | FAILED,
with PAUSED reachable between units.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    CREATED = "CREATED"
    BOOTSTRAP = "BOOTSTRAP"
    PAUSED = "PAUSED"
    DONE = "DONE"
    STOPPED = "STOPPED"
    FAILED = "FAILED"

    @staticmethod
    def grow(g: int) -> str:
        return f"GROW({g})"

    @staticmethod
    def gates(where: int | str) -> str:
        return f"GATES({where})"

    @staticmethod
    def improve(g: int, i: int) -> str:
        return f"IMPROVE({g},{i})"

    @staticmethod
    def eval(what: str) -> str:
        return f"EVAL({what})"

    @staticmethod
    def gate(name: str) -> str:
        return f"GATE({name})"


# A finished campaign has its final policy chosen and evaluated; it is not resumed.
FINISHED = frozenset({State.DONE, State.STOPPED})
# No unit will run again without an operator: finished, or failed.
TERMINAL = FINISHED | {State.FAILED}
