"""Benchmarks: scripts that print figures measured against a baseline in the same run."""

from __future__ import annotations

from collections.abc import Mapping


def print_table(title: str, label: str, rows: Mapping[str, Mapping[str, object]]) -> None:
    """One line per row, one column per figure (floats with two decimals)."""
    columns = list(next(iter(rows.values())))
    width = max(len(label), *(len(name) for name in rows)) + 2
    print(title)
    print(f"{label:{width}}" + "".join(f"{column:>12}" for column in columns))
    for name, figures in rows.items():
        cells = (f"{v:12.2f}" if isinstance(v, float) else f"{v!s:>12}" for v in (figures[c] for c in columns))
        print(f"{name:{width}}" + "".join(cells))
