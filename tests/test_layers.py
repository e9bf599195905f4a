"""Imports run one way: a walk over every module's imports (function-local ones included) against the layer order
in docs/architecture.md, and no circles between modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "unlearnable"

# Lowest first. A module may import its own room and any room below it, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "registry", "utils", "params", "perturbation", "_version", "config"),
    ("data", "runtime", "models", "log"),
    ("protect",),
    ("train",),
    ("audit",),
    ("segment",),
    ("forget",),
    ("protect3d",),  # 3D protection trains segmenters and audits with forget's Dice/MAE
    ("report",),
    ("cli", "__main__", ""),  # "" is the package itself (the public API facade)
]
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}
# Modules that only re-export a moved module for old imports; they point down, and nothing in src imports them.
SHIMS = {"unlearnable.train.distributed", "unlearnable.audit.metrics"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PKG).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every ``unlearnable`` module that ``name`` imports, at any depth of its code."""
    is_pkg = path.name == "__init__.py"
    here = name if is_pkg else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            # ``from pkg import sub`` imports the submodule when there is one
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in MODULES and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_room() -> None:
    assert not [m for m in MODULES if _room(m) not in RANK]


def test_no_import_points_up() -> None:
    bad = [f"{a} -> {b}" for a, deps in sorted(GRAPH.items()) for b in sorted(deps) if RANK[_room(b)] > RANK[_room(a)]]
    assert not bad, "imports from a lower room to a higher one:\n" + "\n".join(bad)


def _is_registration(a: str, b: str) -> bool:
    """A member importing its own package's registry (``formats`` -> ``FORMATS``, ``cli`` -> ``app``): the package
    defines the registry, then imports its members so that they register; not a circle between rooms."""
    return a.rsplit(".", 1)[0] == b and MODULES[b].name == "__init__.py"


def test_no_circles() -> None:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if _is_registration(node, nxt):
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_shims_are_not_used_inside_the_package() -> None:
    users = [f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps if b in SHIMS and a not in SHIMS]
    assert not users, users


def test_matplotlib_backend_is_chosen_in_one_place() -> None:
    places = [str(p.relative_to(SRC)) for p in MODULES.values() if 'matplotlib.use(' in p.read_text()]
    assert places == ["unlearnable/report/__init__.py"], places


@pytest.mark.parametrize("old, new", [("unlearnable.train.distributed", "unlearnable.runtime.distributed")])
def test_moved_module_keeps_its_old_name(old: str, new: str) -> None:
    import importlib

    assert importlib.import_module(old) is importlib.import_module(new)


def test_the_walk_sees_function_local_imports() -> None:
    """The check must not be blind to imports inside functions (how the old data-layer circle hid)."""
    assert "unlearnable.report.forget_figures" in GRAPH["unlearnable.cli.forget_cmds"]
