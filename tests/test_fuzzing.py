"""schemathesis against a real `spacesvc serve`: every check, positive and negative data, and
stateful sequences that follow the document's links (PUT → GET → PATCH → DELETE), as an admin and
as a viewer. The run must find nothing.

What is left out, and why:
- positive_data_acceptance: schema-valid data is refused for reasons of state (412 for a stale
  If-Match, 400 for a first PUT without secretKey) and for rules a schema cannot express (bucket
  names shaped like IPv4 addresses, ports over 65535); tests/spaces/test_validation.py asserts
  acceptance example by example instead.
- use_after_free: after DELETE, GET /api/settings/spaces answers 200 {"configured": false} as
  BRIDGEPORT does (docs/api.md), not 404.
- ensure_resource_availability: a new environment's buckets and credentials answer 404 until
  Spaces is enabled for it (docs/api.md); tests/spaces/test_enablement.py covers that sequence.
- POST /test and the two bucket listings: they connect to the endpoint a request names, and
  fuzzed endpoints would be arbitrary hosts; tests/spaces/test_connection_test.py and
  tests/spaces/test_enablement.py drive them against a real S3 server (moto).
Rate limits are off for the run (it sends thousands of requests a minute); tests/http/
test_rate_limits.py covers them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import Tokens
from tests.support.cli import clean_env, service_env
from tests.support.postgres import free_port
from tests.support.secrecy import assert_hidden
from tests.support.service import Serve

SCHEMATHESIS = str(Path(sys.executable).parent / "st")
EXCLUDED_CHECKS = "positive_data_acceptance,use_after_free,ensure_resource_availability"
EXCLUDED_OPERATIONS = ("testSpacesConnection", "listSpacesBuckets", "listEnvironmentBuckets")


@pytest.fixture
def service(database_url: str) -> Iterator[Serve]:
    server = Serve(
        service_env(
            database_url,
            SPACESVC_RATE_LIMIT="off",
            SPACESVC_AUTH_FAILURE_LIMIT="off",
        ),
        free_port(),
    )
    yield server
    server.stop()


def fuzz(service: Serve, token: str, workdir: Path, max_examples: int) -> dict:
    """One schemathesis run with ``token``; returns its JSON report. The token is passed in the
    environment (the config file names the variable), never on a command line."""
    config = workdir / "schemathesis.toml"
    config.write_text('headers = { Authorization = "Bearer ${SPACESVC_FUZZ_TOKEN}" }\n')
    report = workdir / "report.json"
    command = [SCHEMATHESIS, "--config-file", str(config), "run", f"{service.url}/api/docs/openapi.json"]
    command += ["--checks", "all", "--exclude-checks", EXCLUDED_CHECKS, "--max-examples", str(max_examples)]
    for operation in EXCLUDED_OPERATIONS:
        command += ["--exclude-operation-id", operation]
    command += ["--report", "json", "--report-json-path", str(report), "--no-color"]
    # a watch (Prefer: wait=N with the current version in If-None-Match) may be held up to 60 s
    command += ["--request-timeout", "65"]
    result = subprocess.run(
        command,
        env=clean_env(SPACESVC_FUZZ_TOKEN=token),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert_hidden(result.stdout + result.stderr, token, where="schemathesis's output")
    assert result.returncode == 0, result.stdout[-6000:]
    return dict(json.loads(report.read_text()))


async def test_schemathesis_finds_nothing_as_admin_or_viewer(service: Serve, tokens: Tokens, tmp_path: Path) -> None:
    runs = {
        "admin": (await tokens.create("admin"), 400),
        "viewer": (await tokens.create("viewer", ("settings:read",)), 100),
    }
    generated = {}
    for role, (token, max_examples) in runs.items():
        workdir = tmp_path / role
        workdir.mkdir()
        report = fuzz(service, token, workdir, max_examples)
        assert report["failures"] == [] and report["errors"] == []
        assert {phase: result["status"] for phase, result in report["phases"].items()} == {
            "examples": "success",
            "coverage": "success",
            "fuzzing": "success",
            "stateful": "success",
        }
        assert report["operations"]["tested"] == report["operations"]["total"] - len(EXCLUDED_OPERATIONS)
        generated[role] = report["test_cases"]["generated"]
        print(f"schemathesis as {role}: {generated[role]} test cases, none failed")
    assert generated["admin"] >= 1000 and generated["viewer"] >= 200
    stderr = service.stop()
    assert_hidden(stderr, *(token for token, _ in runs.values()), where="the server log")
    errors = [line for line in stderr.splitlines() if '"level":"error"' in line]
    assert errors == []
