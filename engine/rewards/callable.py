"""A reward given as Python code: "package.module:function", called on batches of sources and candidates.
The version is the hash of the function's source, so an edited reward is a different reward; for a plain
top-level function, `source_version` reads that hash from the module's file without importing it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import inspect
import sys
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import RewardError, RewardModel, batches, hash_source


def resolve_function(spec: str) -> Callable[..., Any]:
    """Import "module:attr[.attr]" and return the callable; RewardError naming the spec otherwise."""
    module_name, sep, attr_path = str(spec).partition(":")
    if not sep or not module_name or not attr_path:
        raise RewardError(f"reward function {spec!r}: expected 'module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except (
        Exception
    ) as e:  # a reward module may fail with anything at import time; report it as the spec's fault
        raise RewardError(f"reward function {spec!r}: cannot import module {module_name!r}: {e}") from e
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise RewardError(f"reward function {spec!r}: {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardError(f"reward function {spec!r}: {type(obj).__name__} object is not callable")
    return obj


def _reference_arity(fn: Callable[..., Any]) -> tuple[bool, bool]:
    """(passes_references, needs_references) from the signature: fn(sources, candidates[, references])."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False, False  # no signature (some builtins): call it the plain two-argument way
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True, False
    if len(positional) >= 3:
        return True, positional[2].default is inspect.Parameter.empty
    return False, False


class CallableReward(RewardModel):
    """Wraps fn(sources, candidates[, references]) -> list of floats in [0, 1]."""

    def __init__(self, spec: str, batch_size: int = 64):
        self.spec = spec
        self.fn = resolve_function(spec)
        self.name = f"callable:{spec}"
        self.batch_size = batch_size
        self.version = hash_source(self.fn)
        self.passes_references, self.needs_reference = _reference_arity(self.fn)

    def score(
        self, sources: list[str], candidates: list[str], references: list[str] | None = None
    ) -> list[float]:
        self._check_inputs(sources, candidates, references)
        out: list[Any] = []
        for sl in batches(len(candidates), self.batch_size):
            args: tuple = (list(sources[sl]), list(candidates[sl]))
            if self.passes_references:
                args += (None if references is None else list(references[sl]),)
            got = self.fn(*args)
            try:
                got = list(got)
            except TypeError as e:
                raise RewardError(f"reward {self.name!r} returned {type(got).__name__}, not a list") from e
            if len(got) != len(args[1]):
                raise RewardError(
                    f"reward {self.name!r} returned {len(got)} scores for a batch of {len(args[1])}"
                )
            out.extend(got)
        # Values are passed through as given: checked_scores is the one place that judges them.
        return [v if isinstance(v, float) else _as_float(v) for v in out]


def _as_float(v: Any) -> Any:
    if v is None or isinstance(v, str | bytes):
        return v  # a string that looks like a number is still a bug in the reward
    try:
        return float(v)
    except (TypeError, ValueError):
        return v  # left for checked_scores to report with the sample's index and id


def source_version(spec: str) -> str | None:
    """The version `CallableReward(spec)` has, computed from the module's file without executing any code.

    Known only for a function defined once, undecorated, by a `def` at the top level of its module (the
    common case); None otherwise (a decorated, reassigned, imported or generated callable, a module found
    by no finder on sys.path or without a .py file), and the caller loads the reward to learn its version.
    """
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr or "." in attr:
        return None
    path = _module_file(module_name)
    if path is None:
        return None
    try:
        with tokenize.open(path) as f:  # as linecache reads it for inspect.getsource
            lines = f.readlines()
        tree = ast.parse("".join(lines), str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    node = _sole_top_level_def(tree, attr)
    if node is None:
        return None
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    # inspect.getsource(fn) is the block that starts at the function's first line.
    return hash_source("".join(inspect.getblock(lines[node.lineno - 1 :])))


def _module_file(module_name: str) -> Path | None:
    """The .py file `import module_name` would run, found without importing the module or its parents."""
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        origin = getattr(loaded, "__file__", None)
    else:
        parts = module_name.split(".")
        try:
            spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing is executed
            for i in range(1, len(parts)):
                if spec is None or not spec.submodule_search_locations:
                    return None
                name = ".".join(parts[: i + 1])
                spec = importlib.machinery.PathFinder.find_spec(name, list(spec.submodule_search_locations))
        except (ImportError, ValueError):
            return None
        origin = spec.origin if spec is not None and spec.has_location else None
    if not origin or not origin.endswith(".py") or not Path(origin).is_file():
        return None
    return Path(origin)


def _sole_top_level_def(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The module's `def name`, if it is the only thing that ever binds `name` at module level."""
    defs = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name and not n.decorator_list
    ]
    if len(defs) != 1 or _rebinds(tree, name) != 1:
        return None
    return defs[0]


def _rebinds(tree: ast.Module, name: str) -> int:
    """How many statements bind `name` in the module's namespace (99 when code could bind it indirectly)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Global) and name in node.names:
            return 99
        if isinstance(node, ast.NamedExpr) and _stores(node.target, name):
            return 99
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("globals", "exec", "eval") or (
                node.func.id == "setattr" and _at_module_level(tree, node)
            ):
                return 99
        if isinstance(node, ast.Attribute) and node.attr == "modules":  # sys.modules[__name__] ...
            return 99
    n = 0
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            n += node.name == name  # its body binds names of its own scope, not the module's
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            for a in node.names:
                if a.name == "*":
                    return 99
                n += (a.asname or a.name.split(".")[0]) == name
            continue
        if isinstance(node, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp):
            continue
        n += _stores(node, name)
        todo.extend(ast.iter_child_nodes(node))
    return n


def _at_module_level(tree: ast.Module, target: ast.AST) -> bool:
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if node is target:
            return True
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return False


def _stores(node: ast.AST, name: str) -> bool:
    if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store | ast.Del):
        return True
    if isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar):
        return node.name == name
    return isinstance(node, ast.MatchMapping) and node.rest == name
