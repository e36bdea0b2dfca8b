"""Offline demo recipes: each writes its data and a campaign TOML under a folder and returns the TOML path.

Nothing is downloaded: the data are generated from a seed, the policy is trained from scratch by the
bootstrap step, and the toy-mt and reward-hack reward heads are trained on the packaged MiniLM encoder.

Budgets: `full` is the recipe as written, `small` a smaller data set and budget (each recipe's own), and
`tiny` the small recipe with TINY_OVERRIDES applied. The campaign.toml a budget writes is the config that
runs: the overrides are written into the file (each changed line says what the recipe had), never applied
only in memory.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import arith, reward_hack, toy_mt

RECIPES: dict[str, Callable[..., Path]] = {
    "arith": arith.prepare,
    "toy-mt": toy_mt.prepare,
    "reward-hack": reward_hack.prepare,
}
# Recipes whose demo runs the reward's unit tests before the campaign starts and reports what they flag.
PREFLIGHT_REWARD_TESTS = ("reward-hack",)
BUDGETS = ("small", "full", "tiny")
# "tiny": a smoke test of the whole loop, not a result: a one-layer policy, one Grow step with 2 samples per
# source, a few optimizer steps, shards of 64 sources so the charts fill while the Grow runs.
TINY_OVERRIDES: dict[str, Any] = {
    "policy": {"scratch": {"n_layer": 1, "n_head": 2, "n_embd": 32}, "bootstrap": {"epochs": 1}},
    "grow": {"samples_per_source": 2, "shard_sources": 64},
    "improve": {"epochs": 1, "max_steps": 5, "eval_every": 5},
    "eval": {"best_of_n": [1, 2], "max_sources": 10},
    "stop": {"max_grow_steps": 1},
}


def prepare(name: str, root: str | Path, small: bool = False, budget: str | None = None) -> Path:
    """Write recipe `name` under root/name (reusing data files already there) and return its campaign.toml.

    `budget` (small, full, tiny) takes precedence over `small`; the file written is the config that runs.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    budget = budget or ("small" if small else "full")
    if budget not in BUDGETS:
        raise ValueError(f"budget {budget!r}: one of {list(BUDGETS)}")
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    path = RECIPES[name](out, small=budget != "full")
    if budget == "tiny":
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
        over = TINY_OVERRIDES | {"name": f"{raw.get('name', name)}-tiny"}
        path.write_text(with_overrides(text, over, "tiny budget"), encoding="utf-8")
    return path


def merge(base: dict, over: dict) -> dict:
    """`over` laid over `base`, table by table."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def toml_value(v: Any) -> str:
    """A scalar or list as TOML writes it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def _flat(over: dict, prefix: str = "") -> dict[str, dict[str, Any]]:
    """{table path: {key: value}} of a nested override ('' is the top level)."""
    out: dict[str, dict[str, Any]] = {}
    for k, v in over.items():
        if isinstance(v, dict):
            for t, kv in _flat(v, f"{prefix}.{k}" if prefix else k).items():
                out.setdefault(t, {}).update(kv)
        else:
            out.setdefault(prefix, {})[k] = v
    return out


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_-]+)(\s*=\s*)(.*)$")


def with_overrides(text: str, over: dict, note: str) -> str:
    """The TOML `text` with the values of `over` (nested tables) written into it: a key the text has gets its
    new value and a comment with the old one, a missing key goes at the end of its table, a missing table at
    the end of the file. Comments and the order of everything else stay. The result is checked: it parses to
    the text's document with `over` merged in."""
    todo = _flat(over)
    lines = text.splitlines()
    table, last_key = "", {"": -1}  # index of the last key line of each table seen
    headers: set[str] = set()
    for i, line in enumerate(lines):
        if m := _HEADER.match(line):
            table = m.group(1)
            headers.add(table)
            last_key.setdefault(table, i)
            continue
        m = _KEY.match(line)
        if not m:
            continue
        last_key[table] = i
        ind, key, eq, rest = m.groups()
        if key in todo.get(table, {}):
            old = rest.split("#", 1)[0].strip() if not rest.lstrip().startswith(('"', "'")) else rest.strip()
            new = toml_value(todo[table].pop(key))
            lines[i] = f"{ind}{key}{eq}{new}  # {note} (the recipe: {old})"
    inserts: dict[int, list[str]] = {}
    tail: list[str] = []
    for t, kv in todo.items():
        if not kv:
            continue
        new = [f"{k} = {toml_value(v)}  # {note}" for k, v in kv.items()]
        if t == "" or t in headers:
            inserts.setdefault(last_key.get(t, -1), []).extend(new)
        else:
            tail += ["", f"[{t}]  # {note}", *new]
    out = []
    for i in range(-1, len(lines)):
        if i >= 0:
            out.append(lines[i])
        out += inserts.get(i, [])
    result = "\n".join(out + tail) + "\n"
    want = merge(tomllib.loads(text), over)
    if tomllib.loads(result) != want:  # pragma: no cover - a TOML layout the line editor does not handle
        raise ValueError(f"could not write the {note} into the recipe's TOML")
    return result
