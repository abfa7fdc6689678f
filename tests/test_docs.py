"""The reference in docs/ says what the service does: checked against the OpenAPI document the
service serves, the code's error table, the variables the code reads and the backend registry."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

import backends
from spacesvc.http.errors import STATUS
from spacesvc.http.pipeline import Policy, RateClass
from spacesvc.routes import DOCS, declared

VARIABLE = re.compile(r"^(?:SPACESVC|VAULT)_[A-Z_]+$")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def table(markdown: str, heading: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first table under ``heading``."""
    lines = markdown.split(f"\n{heading}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i, line in enumerate(lines[start:], start) if not line.startswith("|")), len(lines))
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[start + 2 : end]]


@pytest.mark.unit
def test_readme_and_docs_link_only_to_files_in_the_repository(repo_root: Path) -> None:
    pages = [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]
    assert len(pages) >= 4
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(repo_root), f"{page.name} links outside the repository: {target}"
            assert resolved.exists(), f"{page.name} links to a missing file: {target}"


async def test_the_route_table_is_the_openapi_documents(client: TestClient, repo_root: Path) -> None:
    spec = await (await client.get("/api/docs/openapi.json")).json()
    documented = {
        f"{method.upper()} {path}": " ".join(sorted(operation["responses"]))
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if method != "head"
    }
    rows = table((repo_root / "docs" / "api.md").read_text(), "## Routes")
    written = {row[0].strip("`"): row[3] for row in rows}
    assert written == documented


def policies() -> dict[str, Policy]:
    """The route table's policy of every documented operation ("GET /path")."""
    return {f"{method} {path}": policy for method, path, policy in declared(metrics=True) if (method, path) not in DOCS}


async def test_the_openapi_document_says_what_each_routes_policy_allows(client: TestClient) -> None:
    """Every operation in the document has a policy, and the document shows it: a bearer token and
    401 unless public, 403 when a caller can be refused, 429 unless exempt from the request
    budget, the Idempotency-Key parameter exactly where the route runs once per key, If-Match
    exactly where it takes preconditions."""
    spec = await (await client.get("/api/docs/openapi.json")).json()
    operations = {
        f"{method.upper()} {path}": operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if method != "head"
    }
    table = policies()
    assert sorted(operations) == sorted(table)
    for name, policy in table.items():
        operation, public = operations[name], policy.access.public
        statuses = set(operation["responses"])
        parameters = {parameter["name"] for parameter in operation.get("parameters", [])}
        assert bool(operation.get("security")) is not public, name
        assert ("401" in statuses) is not public, name
        assert ("403" in statuses) is policy.access.forbids, name
        assert ("429" in statuses) is (policy.rate is RateClass.REQUESTS), name
        assert ("Idempotency-Key" in parameters) is policy.idempotent, name
        assert ("If-Match" in parameters) is (policy.conditions is not None), name


@pytest.mark.unit
def test_the_route_tables_who_column_is_the_policy_table(repo_root: Path) -> None:
    rows = table((repo_root / "docs" / "api.md").read_text(), "## Routes")
    written = {row[0].strip("`"): row[1] for row in rows}
    table_ = policies()
    assert sorted(written) == sorted(table_)
    for route, who in written.items():
        assert who.startswith(table_[route].access.who), (route, who, table_[route].access.who)


@pytest.mark.unit
def test_the_error_table_is_the_codes(repo_root: Path) -> None:
    rows = table((repo_root / "docs" / "api.md").read_text(), "## Errors")
    written = {row[0].strip("`"): int(row[1].split()[0]) for row in rows}
    assert written == {code.value: status for code, status in STATUS.items()}


def variables_read_by_the_code(repo_root: Path) -> set[str]:
    found = set()
    for package in ("spacesvc", "backends"):
        for source in (repo_root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and VARIABLE.match(node.value):
                    found.add(node.value)
    return found


@pytest.mark.unit
def test_every_variable_the_code_reads_is_documented(repo_root: Path) -> None:
    variables = variables_read_by_the_code(repo_root)
    assert {"SPACESVC_DATABASE_URL", "SPACESVC_ENCRYPTION_KEYS", "VAULT_ADDR"} <= variables
    documented = (repo_root / "docs" / "configuration.md").read_text()
    assert sorted(name for name in variables if f"`{name}`" not in documented) == []


@pytest.mark.unit
def test_the_backend_table_is_the_registry(repo_root: Path) -> None:
    rows = table((repo_root / "docs" / "configuration.md").read_text(), "## Secret backends")
    written = {row[0].strip("`"): row for row in rows}
    assert list(written) == list(backends.names())
    for name, backend in backends.available().items():
        assert written[name][1] == backend.summary
        for variable in backend.variables:
            assert f"`{variable}`" in written[name][2], (name, variable)
