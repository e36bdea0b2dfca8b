"""How `restgov` is assembled: the engine's command groups plus the `restgov.commands` entry points, and one
`--db` option for all of them (which package may import which is tests/test_imports.py).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from conftest import restgov, restgov_env

import engine.cli
from engine.cli import ENTRY_POINT_GROUP, build_parser
from engine.cli.common import DEFAULT_DB

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    "demo",
    "run",
    "resume",
    "status",
    "export",
    "criteria",
    "ratings",
    "drift",
    "reward-refresh",
    "score",
    "merge-lora",
    "dashboard",
    "users",
    "reward-test",
]
PLUGINS = {"dashboard": ["dashboard", "users"], "reward-test": ["reward-test"]}


def _listed(help_text: str) -> list[str]:
    """Command names in the COMMAND list of a `--help` text, in order."""
    names = []
    for line in help_text.split("positional arguments:", 1)[1].split("options:", 1)[0].splitlines():
        words = line.split()
        if line.startswith("    ") and not line.startswith("     ") and words:
            names.append(words[0])
    return names


def test_restgov_help_lists_every_command_including_the_plugins():
    res = restgov("--help", timeout=60)
    assert res.returncode == 0, res.stderr
    assert sorted(_listed(res.stdout)) == sorted(COMMANDS)
    assert "warning" not in res.stderr


def test_python_m_engine_cli_from_the_repository_root_finds_the_plugins():
    res = subprocess.run(
        [sys.executable, "-m", "engine.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=restgov_env(),
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert sorted(_listed(res.stdout)) == sorted(COMMANDS)


@pytest.mark.parametrize(
    "module, words",
    [("dashboard.cli", ["dashboard", "users"]), ("reward_tests.cli", ["--reward KIND", "--db DB"])],
)
def test_plugin_modules_still_run_on_their_own(module: str, words: list[str]):
    res = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=restgov_env(),
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    for word in words:
        assert word in res.stdout, word


def test_plugins_are_declared_as_entry_points():
    text = (ROOT / "pyproject.toml").read_text()
    assert f'[project.entry-points."{ENTRY_POINT_GROUP}"]' in text
    eps = {ep.name: ep.value for ep in engine.cli.entry_points(group=ENTRY_POINT_GROUP)}
    assert eps == {"dashboard": "dashboard.cli:register", "reward-test": "reward_tests.cli:register"}


def register_fails(subparsers) -> None:
    raise ValueError("this plugin is broken\nover two lines")


def _fake_entry_points(*eps: EntryPoint):
    def entry_points(group: str):
        assert group == ENTRY_POINT_GROUP
        return list(eps)

    return entry_points


def test_a_plugin_that_cannot_load_is_a_one_line_warning(monkeypatch, capsys):
    good = EntryPoint(name="reward-test", value="reward_tests.cli:register", group=ENTRY_POINT_GROUP)
    missing = EntryPoint(name="broken", value="no_such_restgov_plugin:register", group=ENTRY_POINT_GROUP)
    failing = EntryPoint(name="failing", value="test_cli_commands:register_fails", group=ENTRY_POINT_GROUP)
    monkeypatch.setattr(engine.cli, "entry_points", _fake_entry_points(missing, good, failing))
    p = build_parser()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert "broken" in err[0] and "no_such_restgov_plugin" in err[0] and err[0].startswith("warning:")
    assert "failing" in err[1] and "this plugin is broken" in err[1] and err[1].startswith("warning:")
    a = p.parse_args(["reward-test", "--reward", "chrf", "--data", "x.jsonl"])
    assert a.reward == "chrf" and a.db is None
    assert p.parse_args(["status"]).db == DEFAULT_DB


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node


def _sources():
    for pkg in ("engine", "dashboard", "reward_tests", "bench"):
        yield from sorted((ROOT / pkg).rglob("*.py"))


def test_db_option_is_defined_in_one_place():
    where = set()
    for path in _sources():
        for call in _calls(path):
            first = call.args[0] if call.args else None
            if call.func.attr == "add_argument" and isinstance(first, ast.Constant) and first.value == "--db":
                where.add(path.relative_to(ROOT).as_posix())
    assert where == {"engine/cli/common.py"}


def _leaves(parser: argparse.ArgumentParser, name: str = "restgov"):
    """(command path, parser) of every runnable command: subcommands with no subcommands of their own."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
    for action in subs:
        for sub_name, sub in action.choices.items():
            yield from _leaves(sub, f"{name} {sub_name}")


def test_every_command_takes_db():
    leaves = dict(_leaves(build_parser()))
    assert {"restgov users add", "restgov ratings stats", "restgov reward-test"} <= leaves.keys()
    for name, parser in leaves.items():
        assert any("--db" in a.option_strings for a in parser._actions), name
