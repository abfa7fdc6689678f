"""What can be checked here of the files a user runs by hand: README, .ci/run, docker-compose.yml;
and of every file a reader of the repository has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from backends.db import DbSettings
from backends.vault import VaultSettings
from spacesvc.errors import ConfigError
from spacesvc.settings import Settings

pytestmark = pytest.mark.unit


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


def compose() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text())


def interpolate(value: str, dotenv: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} against a .env of ``dotenv``."""

    def substitute(match: re.Match[str]) -> str:
        name, op, rest = match[1], match[2], match[3] or ""
        if name in dotenv and dotenv[name] != "":
            return dotenv[name]
        if op == ":?":
            raise AssertionError(f"{name} is required: {rest}")
        return rest if op == ":-" else ""

    return re.sub(r"\$\{([A-Z_]+)(:-|:\?)?([^}]*)\}", substitute, value)


def service_environment(dotenv: dict[str, str]) -> dict[str, str]:
    env = compose()["services"]["spacesvc"]["environment"]
    return {name: interpolate(str(value), dotenv) for name, value in env.items()}


def test_compose_file_parses_and_wires_spacesvc_to_postgres_and_openbao() -> None:
    services = compose()["services"]
    assert {"postgres", "spacesvc", "openbao"} <= set(services)
    spacesvc = services["spacesvc"]
    assert spacesvc["build"] == "."
    assert spacesvc["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert spacesvc["depends_on"]["openbao"]["required"] is False
    assert services["openbao"]["profiles"] == ["vault"]
    assert services["openbao"]["environment"]["BAO_DEV_ROOT_TOKEN_ID"] == "${VAULT_TOKEN:-}"


def test_compose_db_setup_gives_settings_the_service_accepts() -> None:
    key = "k1:" + "A" * 43 + "="
    env = service_environment({"POSTGRES_PASSWORD": "pw", "SPACESVC_ENCRYPTION_KEYS": key})
    assert env["SPACESVC_DATABASE_URL"] == "postgresql://spacesvc:pw@postgres:5432/spacesvc"
    settings = Settings.from_env(env)
    assert isinstance(settings.secrets, DbSettings) and settings.secrets.keys[0].kid == "k1"


def test_compose_vault_profile_gives_settings_the_service_accepts() -> None:
    dotenv = {"POSTGRES_PASSWORD": "pw", "SPACESVC_SECRET_BACKEND": "vault", "VAULT_TOKEN": "t"}
    settings = Settings.from_env(service_environment(dotenv))
    assert isinstance(settings.secrets, VaultSettings)
    assert (settings.secrets.addr, settings.secrets.mount, settings.secrets.path) == (
        "http://openbao:8200",
        "secret",
        "spacesvc/spaces",
    )


def test_compose_fleet_profile_gives_spacesvc_a_shared_rate_limit_store() -> None:
    services = compose()["services"]
    assert services["redis"]["profiles"] == ["fleet"]
    assert services["spacesvc"]["depends_on"]["redis"]["required"] is False
    assert service_environment({"POSTGRES_PASSWORD": "pw"})["SPACESVC_RATE_LIMIT_STORAGE"] == "memory"
    shared = service_environment({"POSTGRES_PASSWORD": "pw", "SPACESVC_RATE_LIMIT_STORAGE": "redis://redis:6379/0"})
    assert shared["SPACESVC_RATE_LIMIT_STORAGE"] == "redis://redis:6379/0"


def test_compose_without_a_key_for_the_db_backend_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="SPACESVC_ENCRYPTION_KEYS"):
        Settings.from_env(service_environment({"POSTGRES_PASSWORD": "pw"}))


def test_every_compose_variable_is_documented(repo_root: Path) -> None:
    documented = (repo_root / "docs" / "configuration.md").read_text()
    for name in compose()["services"]["spacesvc"]["environment"]:
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


def test_the_dockerfile_runs_a_supported_python_as_a_user_other_than_root(repo_root: Path) -> None:
    dockerfile = (repo_root / "Dockerfile").read_text()
    base = re.search(r"^FROM python:(3\.\d+)-slim$", dockerfile, re.M)
    assert base is not None
    supported = (repo_root / "README.md").read_text().split("## Supported", 1)[1].split("\n## ", 1)[0]
    assert base[1] in supported
    assert re.search(r"^USER (?!root)\S+$", dockerfile, re.M)


# Written so that this file does not match itself: "[S]PEC" and "[Ii]ssue [0-9]" are not what they find.
OUTSIDE_REFERENCE = re.compile(r"[S]PEC|\u00a7|[Ii]ssue [0-9]")
NOT_THE_REPOSITORY = {
    ".git",
    ".venv",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".spacesvc",
    "build",
    "dist",
}


def repository_files(repo_root: Path) -> list[Path]:
    """Every file of the checkout, without what tools generate beside it (virtualenv, caches, egg-info)."""
    found = []
    for path in sorted(repo_root.rglob("*")):
        parts = path.relative_to(repo_root).parts
        if any(part in NOT_THE_REPOSITORY or part.endswith(".egg-info") for part in parts) or not path.is_file():
            continue
        found.append(path)
    return found


def test_nothing_cites_a_document_outside_the_repository(repo_root: Path) -> None:
    """Code, tests, docs, manifests and benchmarks cite the repository's own docs, never a
    specification's sections or tracker entries a reader of the repository does not have."""
    citing = []
    for path in repository_files(repo_root):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text
        citing += [
            f"{path.relative_to(repo_root)}:{number}: {line.strip()}"
            for number, line in enumerate(text.splitlines(), 1)
            if OUTSIDE_REFERENCE.search(line)
        ]
    assert len(repository_files(repo_root)) > 100 and not citing, "\n".join(citing)
