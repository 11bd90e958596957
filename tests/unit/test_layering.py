"""The gateway's packages import downwards only, and never in a circle (issue 20, DESIGN §3).

Read from the source with ``ast`` (nothing is imported), counting every import: module level,
inside functions (a lazy import is a dependency all the same) and under ``TYPE_CHECKING``.

The layers, as the code has them (2026-11-30):

- the foundation modules at the top of ``gateway/`` (``models``, ``errors``, ``settings``,
  ``headers``, ``problems``, ``child_process``, ...) and the packages ``telemetry``, ``store``,
  ``sessions``, ``runtime``, ``stdio``, ``auth``, ``policy``, ``credentials``, ``browser`` sit
  below the planes: none of them imports ``proxy``, ``control``, ``servers``, ``ui``, ``client``,
  ``app`` or ``cli``. Among themselves they may depend on each other (``telemetry`` wraps the
  store, session store and runtime it instruments) as long as no cycle forms.
- ``proxy`` and ``control`` never import each other; ``servers`` (virtual servers, issue 16) sits
  above ``control`` and reuses its service and validation.
- only the composition root's own entry points (``gateway/app.py``, ``gateway/cli.py``) name
  ``gateway.app``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"

PLANES = frozenset({"proxy", "control", "servers", "ui", "client", "app", "cli"})
"""What sits above: the two planes, virtual servers, the portal, the CLI client and the entry points."""

BELOW_PLANES = frozenset(
    {
        "telemetry",
        "store",
        "sessions",
        "runtime",
        "stdio",
        "auth",
        "policy",
        "credentials",
        "browser",
        "models",
        "errors",
        "settings",
        "envpolicy",
        "headers",
        "problems",
        "child_process",
        "azure_credentials",
        "drain",
        "edge",
    }
)
"""What must not import PLANES: the packages the issue names, plus stdio and the foundation modules."""

ALLOWED: dict[tuple[str, str], str] = {}
"""Known exceptions, each with why: (importing package, imported module) -> reason. Each must still exist."""


class Edge(NamedTuple):
    """One import of a gateway module by a gateway module."""

    source: str
    """The importing package (``gateway/store/sqlite.py`` -> ``store``; ``gateway/app.py`` -> ``app``)."""
    target: str
    """The imported module, dotted (``gateway.store.base``)."""
    where: str
    """File and line, for the failure message."""

    @property
    def target_package(self) -> str:
        """The imported package (or top-level module), as ``source`` names it."""
        parts = self.target.split(".")
        return parts[1] if len(parts) > 1 else "gateway"


def _module_name(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(GATEWAY.parent).with_suffix("").parts
    if rel[-1] == "__init__":
        return ".".join(rel[:-1]), True
    return ".".join(rel), False


def import_edges() -> list[Edge]:
    """Every import from one gateway package (or top-level module) of another."""
    edges: list[Edge] = []
    for path in sorted(GATEWAY.rglob("*.py")):
        module, is_package = _module_name(path)
        parts = module.split(".")
        source = parts[1] if len(parts) > 1 else "gateway"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts if is_package else parts[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                # ``from gateway import settings`` imports the module gateway.settings
                targets = [f"gateway.{a.name}" for a in node.names] if target == "gateway" else [target]
            else:
                continue
            for target in targets:
                if target.startswith("gateway."):
                    edge = Edge(source, target, f"{path.relative_to(GATEWAY.parent)}:{node.lineno}")
                    if edge.target_package != source:
                        edges.append(edge)
    return edges


def _checked_edges() -> list[Edge]:
    return [e for e in import_edges() if (e.source, e.target) not in ALLOWED]


def test_nothing_below_the_planes_imports_them() -> None:
    """telemetry, store, sessions, runtime, auth, policy, credentials, browser, stdio and the foundation
    modules never import proxy, control, servers, ui, client, app or cli."""
    upward = [e for e in _checked_edges() if e.source in BELOW_PLANES and e.target_package in PLANES]
    assert not upward, "imports that run upward:\n" + "\n".join(f"{e.where}: {e.target}" for e in upward)


def test_proxy_and_control_never_import_each_other() -> None:
    """The data plane and the control plane share only what sits below them (DESIGN §3)."""
    crossing = [e for e in _checked_edges() if {e.source, e.target_package} == {"proxy", "control"}]
    assert not crossing, "\n".join(f"{e.where}: {e.target}" for e in crossing)


def test_only_the_entry_points_import_the_composition_root() -> None:
    """gateway.app builds the object graph; nothing it builds may reach back for it."""
    users = [e for e in _checked_edges() if e.target_package == "app" and e.source not in {"app", "cli"}]
    assert not users, "\n".join(f"{e.where}: {e.target}" for e in users)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that starts and ends on the same node, or None for a DAG."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_packages_form_no_import_cycle() -> None:
    """The package-level import graph is a DAG (a module-level DAG is not enough: a package is a layer)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in _checked_edges():
        graph[e.source].add(e.target_package)
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a three-package loop is reported as such, a diamond is not."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}}) is None


def test_each_allowed_exception_is_still_needed() -> None:
    """An exception that no longer occurs is removed from ALLOWED, so it cannot hide a new one."""
    present = {(e.source, e.target) for e in import_edges()}
    stale = [key for key in ALLOWED if key not in present]
    assert not stale, f"remove from ALLOWED, the code no longer does this: {stale}"
