"""Which package may import which, read from the source with `ast` (imports inside functions included):

- `engine` imports neither `dashboard` nor `reward_tests` (they plug in through entry points), nor Streamlit;
- `reward_tests`, a library, imports from `engine` only `engine.rewards`; its command front end,
  reward_tests/cli.py, may also import `engine.cli.common`, `engine.config`, `engine.data` and
  `engine.store` (the `--db` option, a campaign's [reward] table, the --data file and the store);
- `dashboard` may import `engine` and `reward_tests`; none of the three imports `tests` or `bench`;
- the imports `engine`'s modules run when they are loaded (module level, outside `if TYPE_CHECKING:`)
  form no cycle, so every engine module can be imported first without a partly initialised module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("engine", "dashboard", "reward_tests")
FIRST_PARTY = (*PACKAGES, "tests", "bench")
REWARD_TESTS_LIBRARY = ("engine.rewards",)
REWARD_TESTS_CLI = (
    *REWARD_TESTS_LIBRARY,
    "engine.cli.common",
    "engine.config",
    "engine.data",
    "engine.store",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _sources(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


def _base(path: Path, level: int) -> str:
    """The package a relative import of `level` dots in `path` starts from."""
    parts = _module_name(path).split(".")
    if not _is_package(path):
        parts = parts[:-1]
    return ".".join(parts[: len(parts) - (level - 1)])


def _targets(path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The absolute names an import statement loads: modules, or for `from X import name`, X.name when
    that is a module of this tree and X otherwise."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
        return
    base = node.module or ""
    if node.level:
        base = _base(path, node.level) + (f".{node.module}" if node.module else "")
    for a in node.names:
        sub = f"{base}.{a.name}"
        yield sub if _exists(sub) else base


def _exists(module: str) -> bool:
    p = ROOT.joinpath(*module.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _all_imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported name) of every import in the file, wherever it is."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _targets(path, node):
                yield node.lineno, target


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _load_time_imports(path: Path) -> Iterator[str]:
    """Names imported when the module is loaded: module-level statements, not function bodies (class
    bodies do run), and not `if TYPE_CHECKING:` blocks."""
    todo: list[ast.AST] = list(ast.parse(path.read_text(), filename=str(path)).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield from _targets(path, node)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _violations(pkg: str, allowed) -> list[str]:
    out = []
    for path in _sources(pkg):
        rel = path.relative_to(ROOT).as_posix()
        for line, name in _all_imports(path):
            if not allowed(rel, name):
                out.append(f"{rel}:{line} imports {name}")
    return out


def test_the_sources_are_found():
    names = {_module_name(p) for pkg in PACKAGES for p in _sources(pkg)}
    assert {
        "engine.worker",
        "engine.steps.reward_tests",
        "reward_tests.cli",
        "dashboard.reward_jobs",
    } <= names


def test_engine_imports_neither_dashboard_nor_reward_tests_nor_streamlit():
    def allowed(rel: str, name: str) -> bool:
        return not _under(name, ("dashboard", "reward_tests", "streamlit", "tests", "bench"))

    assert _violations("engine", allowed) == []


def test_reward_tests_imports_only_the_rewards_from_engine():
    def allowed(rel: str, name: str) -> bool:
        if _under(name, ("dashboard", "tests", "bench")):
            return False
        if not _under(name, ("engine",)):
            return True
        return _under(name, REWARD_TESTS_CLI if rel == "reward_tests/cli.py" else REWARD_TESTS_LIBRARY)

    assert _violations("reward_tests", allowed) == []


def test_dashboard_imports_engine_and_reward_tests_only_among_first_party_packages():
    def allowed(rel: str, name: str) -> bool:
        return not _under(name, ("tests", "bench"))

    assert _violations("dashboard", allowed) == []


def _engine_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _sources("engine"):
        me = _module_name(path)
        graph[me] = {n for n in _load_time_imports(path) if _under(n, ("engine",)) and n != me and _exists(n)}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_engine_modules_import_each_other_without_a_cycle():
    graph = _engine_graph()
    assert "engine.worker" in graph and "engine.config" in graph["engine.worker"]
    assert _cycles(graph) == []
