"""Benchmarks: scripts that print figures measured against a baseline in the same run."""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests


def print_table(title: str, label: str, rows: Mapping[str, Mapping[str, object]]) -> None:
    """One line per row, one column per figure (floats with two decimals)."""
    columns = list(next(iter(rows.values())))
    width = max(len(label), *(len(name) for name in rows)) + 2
    print(title)
    print(f"{label:{width}}" + "".join(f"{column:>12}" for column in columns))
    for name, figures in rows.items():
        cells = (f"{v:12.2f}" if isinstance(v, float) else f"{v!s:>12}" for v in (figures[c] for c in columns))
        print(f"{name:{width}}" + "".join(cells))


def service_env(database_url: str, **variables: str) -> dict[str, str]:
    """This process's environment for `spacesvc serve` on ``database_url`` (db backend, a fresh
    key), plus ``variables``."""
    return {
        **os.environ,
        "SPACESVC_DATABASE_URL": database_url,
        "SPACESVC_ENCRYPTION_KEYS": f"k1:{base64.b64encode(os.urandom(32)).decode()}",
        **variables,
    }


def spacesvc_serve(port: int, *arguments: str) -> list[str]:
    """The command line of `spacesvc serve` on ``port``, from this virtualenv."""
    return [str(Path(sys.executable).parent / "spacesvc"), "serve", "--port", str(port), *arguments]


def start(command: list[str], env: dict[str, str], url: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``command`` (its stderr into ``log``, if given) and return once ``url`` answers."""
    stderr = log.open("wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    for _ in range(200):
        try:
            requests.get(url, timeout=1)
            return process
        except requests.RequestException:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{command[:3]} did not start")


def resident_mb(pid: int) -> float:
    """A process's resident memory (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def wrk_rounds_options(seconds: int = 8, rows: Sequence[str] = ()) -> argparse.Namespace:
    """The command line of the benchmarks that run wrk in alternating rounds: --seconds per row
    (default ``seconds``), --connections, --rounds; with ``rows`` (their short names), --rows to
    run only some of them (default: all)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=seconds)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    if rows:
        parser.add_argument(
            "--rows",
            type=lambda text: text.split(","),
            default=list(rows),
            help=f"comma-separated, of: {','.join(rows)} (default: all)",
        )
    options = parser.parse_args()
    unknown = set(getattr(options, "rows", ())) - set(rows)
    if unknown:
        parser.error(f"--rows: unknown {', '.join(sorted(unknown))}; choose among {','.join(rows)}")
    return options
