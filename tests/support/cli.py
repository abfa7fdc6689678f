"""Running the installed ``spacesvc`` command as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.secrecy import TEST_KEY, keys_env

SPACESVC = str(Path(sys.executable).parent / "spacesvc")


def clean_env(**variables: str) -> dict[str, str]:
    """The test process's environment without any SPACESVC_/VAULT_ variable, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACESVC_", "VAULT_"))}
    env.update(variables)
    return env


def service_env(database_url: str, **variables: str) -> dict[str, str]:
    """``clean_env`` for the service on ``database_url`` with the db backend's test key, plus ``variables``."""
    return clean_env(SPACESVC_DATABASE_URL=database_url, SPACESVC_ENCRYPTION_KEYS=keys_env(TEST_KEY), **variables)


def run(
    *args: str, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SPACESVC, *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
