"""Layers point one way: the secret backends below the service, the service's modules in no
import circle (type-only imports included), and ``import backends`` light enough for any tool."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGES = ("spacesvc", "backends")
# What a web service needs and a secret backend does not.
HEAVY = ("aiohttp", "aiohttp_apispec", "apispec", "marshmallow", "prometheus_client")


def modules(repo_root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (repo_root / package).rglob("*.py"):
            parts = path.relative_to(repo_root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(module: str, known: dict[str, Path]) -> Iterator[str]:
    """The modules of this repository that ``module`` imports anywhere, under TYPE_CHECKING too."""
    path = known[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per dot after the first
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            for alias in node.names:
                name = f"{base}.{alias.name}"
                if name in known:
                    yield name
                elif base in known:
                    yield base


def import_graph(repo_root: Path) -> dict[str, set[str]]:
    known = modules(repo_root)
    return {module: set(imported(module, known)) - {module} for module in known}


def test_importing_the_backends_loads_no_web_framework_schema_or_metrics_library_and_nothing_of_the_service(
    repo_root: Path,
) -> None:
    code = "import sys, backends, backends.vault, backends.db, backends.env; print(*sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True
    ).stdout.split()
    assert {"backends.vault", "backends.db", "backends.env", "hvac", "asyncpg"} <= set(loaded)
    assert [name for name in loaded if name.split(".")[0] in (*HEAVY, "spacesvc")] == []


def test_no_module_imports_itself_back_through_others_type_only_imports_included(repo_root: Path) -> None:
    graph = import_graph(repo_root)
    assert len(graph) > 50 and graph["spacesvc.app"]
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"an import circle: {' -> '.join(error.args[1])}")


def test_the_backends_import_nothing_of_the_service_but_their_own_errors(repo_root: Path) -> None:
    graph = import_graph(repo_root)
    backends = [module for module in graph if module.split(".")[0] == "backends"]
    upward = {module: sorted(name for name in graph[module] if name.split(".")[0] != "backends") for module in backends}
    assert upward == {module: [] for module in backends} and "backends.vault" in backends
    assert graph["backends.errors"] == set()


def test_the_instruments_are_a_leaf_any_layer_may_count_with(repo_root: Path) -> None:
    assert import_graph(repo_root)["spacesvc.instruments"] == set()
