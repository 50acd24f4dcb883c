"""The import contract, read from the source (nothing is imported): no circles, no arrow up.

Layers, bottom to top: the machinery (config, routing, memory, the serving wing, ...), the graph
(`graph`, `nodes`), then what drives it (`batch`, `bench`, `cli`). The machinery never imports a
layer above it at import time; `graph/state.py` and `graph/context.py` sit at the bottom of the
graph and import nothing above them. Inside the serving wing, from the floor up: `records`
(imports nothing of ours), `runtimes`, the pools (`local`, `ray_serve`: a Ray replica runs a
local pool), and the face (`ech0_moe.serving`: `make_pool`); nothing imports a level above its
own, and Ray is imported only in `ray_serve`. No source file is over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"ech0_moe": ROOT / "ech0_moe", "ech0_moe.graph": ROOT / "graph", "ech0_moe.nodes": ROOT / "nodes"}
ABOVE_MACHINERY = (
    "ech0_moe.graph",
    "ech0_moe.nodes",
    "ech0_moe.batch",
    "ech0_moe.bench",
    "ech0_moe.cli",
)
DRIVERS = ("ech0_moe.batch", "ech0_moe.bench", "ech0_moe.cli")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            if (
                name.startswith("ech0_moe.graph.")
                or name.startswith("ech0_moe.nodes.")
                or name in PACKAGES
                or (package == "ech0_moe" and not name.startswith(("ech0_moe.graph", "ech0_moe.nodes")))
            ):
                found[name] = path
    return found


MODULES = _modules()


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at import time) for every import of ours in `path`; TYPE_CHECKING blocks skipped."""
    out: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    out.append((sub if sub in MODULES else child.module, top))
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return [(m, top) for m, top in out if m in MODULES or m == "ray" or m.startswith("ray.")]


EDGES = {name: _imports(path) for name, path in MODULES.items()}


def test_the_reader_finds_the_layers() -> None:
    assert {"ech0_moe.memory.kb", "ech0_moe.routing.router", "ech0_moe.graph.builder", "ech0_moe.cli"} <= set(MODULES)
    assert ("ech0_moe.serving.records", True) in EDGES["ech0_moe.serving"]


def test_no_import_circles() -> None:
    graph = {m: {t for t, _ in EDGES[m] if t in MODULES and t != m} for m in MODULES}
    # a package's __init__ may import its own submodules; a submodule importing its package back is a circle
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph[m]:
            if state.get(t) == 1:
                circle = [*stack[stack.index(t) :], t]
                pytest.fail("import circle: " + " -> ".join(circle))
            if t not in state:
                walk(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not _under(m, ABOVE_MACHINERY) and m != "ech0_moe"))
def test_the_machinery_never_imports_upwards_at_import_time(module: str) -> None:
    ray = module.startswith("ech0_moe.serving.ray_serve")  # the one part that runs on Ray
    up = [
        t for t, top in EDGES[module] if top and (_under(t, ABOVE_MACHINERY) or (t.split(".")[0] == "ray" and not ray))
    ]
    assert not up, f"{module} imports {up} at import time"


WING = "ech0_moe.serving"
# each level of the serving wing, and what it may never import (at any time)
WING_RULES = {
    f"{WING}.records": ("ech0_moe",),
    f"{WING}.runtimes": (f"{WING}.local", f"{WING}.ray_serve", f"{WING}.pool"),
    f"{WING}.local": (f"{WING}.ray_serve",),
}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _under(m, (WING,))))
def test_the_serving_wing_has_no_arrow_back_up(module: str) -> None:
    for level, banned in WING_RULES.items():
        if _under(module, (level,)):
            bad = [t for t, _ in EDGES[module] if _under(t, banned) and not _under(t, (level,))]
            assert not bad, f"{module} imports {bad}"
    if module != WING:  # below the face: nothing imports `make_pool`'s module
        assert WING not in [t for t, _ in EDGES[module]], f"{module} imports the wing's face"
    if not module.startswith(f"{WING}.ray_serve"):
        assert not [t for t, _ in EDGES[module] if t.split(".")[0] == "ray"], f"{module} imports ray"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _under(m, ("ech0_moe.graph", "ech0_moe.nodes"))))
def test_the_graph_never_imports_its_drivers(module: str) -> None:
    assert not [t for t, _ in EDGES[module] if _under(t, DRIVERS)]


@pytest.mark.parametrize("module", ["ech0_moe.graph.state", "ech0_moe.graph.context"])
def test_state_and_context_are_the_bottom_of_the_graph(module: str) -> None:
    above = [t for t, _ in EDGES[module] if _under(t, ABOVE_MACHINERY) and t not in ("ech0_moe.graph.context",)]
    assert not above, f"{module} imports {above}"


def test_no_source_file_over_400_lines() -> None:
    parts = lambda p: p.relative_to(ROOT).parts  # noqa: E731
    files = [p for p in ROOT.rglob("*.py") if not any(d.startswith(".") or d == "build" for d in parts(p))]
    long = {
        str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_the_wheel_lists_every_package_and_ships_the_benchmarks_data() -> None:
    """`pip install .` gets every subpackage, and `ech0-moe bench` its default data (ech0_moe.benchmarks)."""
    import tomllib

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(tool["packages"])
    found = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert found <= packages, found - packages
    assert tool["package-dir"]["ech0_moe.benchmarks"] == "benchmarks"
    assert (
        "*.jsonl" in tool["package-data"]["ech0_moe.benchmarks"]
        and (ROOT / "benchmarks" / "routing-dev.jsonl").is_file()
    )
