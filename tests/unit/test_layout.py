"""Tests mirror the code, and fixtures are plugins (issue 20, Deliver 3; tests/LAYOUT.md).

A test file sits in the folder of its kind; no test module imports a fixture (``tests/conftest.py``
loads every module of ``tests/fixtures/`` that defines one as a pytest plugin); plugins are listed once.
Read from the source with ``ast``: nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests import conftest

TESTS = Path(__file__).resolve().parents[1]
KINDS = ("unit", "integration", "e2e", "adversarial", "infra")


def fixtures_defined_in(path: Path) -> set[str]:
    """Names of the functions in ``path`` decorated with ``pytest.fixture`` (with or without arguments)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                if ast.unparse(target) in ("pytest.fixture", "fixture"):
                    names.add(node.name)
    return names


def module_path(module: str) -> Path | None:
    """The file of a ``tests.…`` module, if it is one."""
    if not module.startswith("tests."):
        return None
    base = TESTS.parent.joinpath(*module.split("."))
    return base.with_suffix(".py") if base.with_suffix(".py").exists() else None


def test_every_test_file_sits_in_the_folder_of_its_kind() -> None:
    misplaced = [
        str(path.relative_to(TESTS.parent))
        for path in TESTS.rglob("test_*.py")
        if path.relative_to(TESTS).parts[0] not in KINDS
    ]
    assert not misplaced, f"move these under tests/{{{','.join(KINDS)}}}/ (see tests/LAYOUT.md): {misplaced}"


def test_no_test_module_imports_a_fixture() -> None:
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.relative_to(TESTS).parts[0] in ("fixtures", "infra"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and (source := module_path(node.module)):
                imported = {alias.name for alias in node.names} & fixtures_defined_in(source)
                found += [f"{path.relative_to(TESTS.parent)}: {name} from {node.module}" for name in sorted(imported)]
    assert not found, "fixtures are used by name (move shared ones into a tests/fixtures/ plugin): " + "; ".join(found)


def test_every_fixture_module_is_a_plugin_once() -> None:
    with_fixtures = {
        f"tests.fixtures.{path.stem}" for path in (TESTS / "fixtures").glob("*.py") if fixtures_defined_in(path)
    }
    plugins = list(conftest.pytest_plugins)
    assert len(plugins) == len(set(plugins)), plugins
    assert set(plugins) == with_fixtures
