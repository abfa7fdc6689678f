"""Backends register themselves: a module in backends/ is all the service needs to offer one."""

from __future__ import annotations

import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Self

import asyncpg
import pytest

import backends
import backends.base
from backends import BackendSettings, Health, SecretBackend, SecretLocation
from backends.env import EnvSettings
from spacesvc.cli import build_parser
from spacesvc.errors import ConfigError
from spacesvc.settings import Settings
from spacesvc.spaces.schemas import SpacesConfigSchema

pytestmark = pytest.mark.unit


def test_every_module_of_the_package_is_a_registered_backend() -> None:
    modules = {module.name for module in pkgutil.iter_modules(backends.__path__)} - backends.INFRASTRUCTURE
    assert set(backends.names()) == modules >= {"db", "env", "vault"}


def test_an_unknown_backend_is_a_configuration_error_listing_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"SPACESVC_SECRET_BACKEND": "s3cret-store"})
    assert str(error.value) == (
        f"SPACESVC_SECRET_BACKEND='s3cret-store' is not a secret backend; choose one of: {', '.join(backends.names())}"
    )
    assert "db, env" in str(error.value)


def test_each_backend_reads_its_own_variables() -> None:
    settings = Settings.from_env({"SPACESVC_SECRET_BACKEND": "env", "SPACESVC_SPACES_SECRET_KEY": "from-env"})
    assert settings.secrets == EnvSettings("from-env")
    assert settings.secret_backend == "env"
    with pytest.raises(ConfigError, match="VAULT_ADDR"):
        Settings.from_env({"SPACESVC_SECRET_BACKEND": "vault"})


def test_the_api_schema_and_the_cli_offer_the_registered_backends() -> None:
    assert SpacesConfigSchema().fields["secretBackend"].metadata["enum"] == list(backends.names())
    migrate = build_parser().parse_args(["secrets", "migrate", "--to", "vault"])
    assert migrate.target == "vault"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["secrets", "migrate", "--to", "env"])  # env is read-only


@dataclass(frozen=True)
class NotebookSettings(BackendSettings):
    page: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, embedded: bool) -> Self:
        page = env.get("SPACESVC_NOTEBOOK_PAGE")
        if page is None:
            raise ConfigError("SPACESVC_NOTEBOOK_PAGE is required with SPACESVC_SECRET_BACKEND=notebook")
        return cls(page)


def test_a_new_backend_is_selectable_once_its_class_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends.base, "_REGISTRY", dict(backends.base.registered()))

    class NotebookBackend(SecretBackend):
        name: ClassVar[str] = "notebook"
        summary: ClassVar[str] = "a page of a notebook"
        variables: ClassVar[tuple[str, ...]] = ("SPACESVC_NOTEBOOK_PAGE",)
        settings_class: ClassVar[type[BackendSettings]] = NotebookSettings

        def __init__(self, settings: NotebookSettings) -> None:
            self.secrets: dict[str, str] = {}

        async def read(self, conn: asyncpg.Connection, location: SecretLocation) -> str | None:
            return self.secrets.get(location.owner)

        async def write(self, conn: asyncpg.Connection, location: SecretLocation, secret: str) -> int | None:
            self.secrets[location.owner] = secret
            return None

        async def delete(self, conn: asyncpg.Connection, location: SecretLocation) -> None:
            self.secrets.pop(location.owner, None)

        async def health(self, conn: asyncpg.Connection) -> Health:
            return Health(True, "ok")

    assert "notebook" in backends.names()
    settings = Settings.from_env({"SPACESVC_SECRET_BACKEND": "notebook", "SPACESVC_NOTEBOOK_PAGE": "p. 12"})
    assert settings.secret_backend == "notebook"
    assert isinstance(backends.create_backend(settings.secrets), NotebookBackend)
    with pytest.raises(ConfigError, match="SPACESVC_NOTEBOOK_PAGE"):
        Settings.from_env({"SPACESVC_SECRET_BACKEND": "notebook"})
    assert build_parser().parse_args(["secrets", "migrate", "--to", "notebook"]).target == "notebook"


def test_two_backends_may_not_share_a_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends.base, "_REGISTRY", dict(backends.base.registered()))
    with pytest.raises(TypeError, match="two secret backends are named 'db'"):

        class Impostor(SecretBackend):
            name: ClassVar[str] = "db"
