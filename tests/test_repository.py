"""What can be checked here of the files a user runs by hand: README, .ci/run, docker-compose.yml."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from spacesvc.settings import Settings


def readme_commands(repo_root: Path) -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", (repo_root / "README.md").read_text(), re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("python3 -m venv")]


def test_readme_gives_one_run_command_and_one_test_command(repo_root: Path) -> None:
    run, test = readme_commands(repo_root)
    assert run.endswith("spacesvc serve")
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim(repo_root: Path) -> None:
    _, test = readme_commands(repo_root)
    ci = (repo_root / ".ci" / "run").read_text()
    assert test in ci.splitlines()
    assert "set -euo pipefail" in ci


def test_compose_file_parses_and_wires_spacesvc_to_postgres(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "spacesvc"} <= set(services)
    spacesvc = services["spacesvc"]
    assert spacesvc["build"] == "."
    assert spacesvc["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = spacesvc["environment"]
    assert "@postgres:5432/" in env["SPACESVC_DATABASE_URL"]
    assert env["SPACESVC_SECRET_BACKEND"] == "db"
    assert env["SPACESVC_ENCRYPTION_KEYS"].startswith("${SPACESVC_ENCRYPTION_KEYS:?")


def test_compose_variables_are_ones_the_service_reads(repo_root: Path) -> None:
    compose = yaml.safe_load((repo_root / "docker-compose.yml").read_text())
    env = compose["services"]["spacesvc"]["environment"]
    settings = Settings.from_env(
        {
            name: (
                "postgresql://u:p@postgres:5432/db"
                if name == "SPACESVC_DATABASE_URL"
                else "k1:" + "A" * 43 + "="
                if name == "SPACESVC_ENCRYPTION_KEYS"
                else value
            )
            for name, value in env.items()
        }
    )
    assert settings.secret_backend == "db" and settings.encryption_keys[0].kid == "k1"
    documented = (repo_root / "README.md").read_text()
    for name in env:
        assert f"`{name}`" in documented, name


def test_no_secret_is_committed_in_the_compose_file(repo_root: Path) -> None:
    text = (repo_root / "docker-compose.yml").read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|KEYS|TOKEN|SECRET_KEY|SECRET_ID)[A-Z_]*:\s*\S", line) and not line.lstrip().startswith(
            "#"
        ):
            assert "${" in line, line


def test_dockerfile_ships_the_migrations(repo_root: Path) -> None:
    dockerfile = (repo_root / "Dockerfile").read_text()
    for path in ("spacesvc", "backends", "migrations"):
        assert f"COPY {path} ./{path}" in dockerfile
