"""Extensions found through package entry points, so that `engine` never imports the packages built on it.

`restgov.steps` names worker-side runners that live outside `engine` (the reward unit-test suite of the
`reward_tests` package); `restgov.commands` names command groups of the CLI (engine/cli). Both are declared
in pyproject.toml and exist once the project is installed (`pip install -e .`).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any


class PluginMissing(RuntimeError):
    pass


def load(group: str, name: str) -> Any:
    found = entry_points(group=group, name=name)
    if not found:
        raise PluginMissing(
            f"no {group!r} entry point named {name!r}: install the project (pip install -e .) so that "
            "its entry points are registered"
        )
    return next(iter(found)).load()
