"""SQL with named parameters (``:name``), run as asyncpg's positional ``$n``: a statement's
parameters are named where they are used, and passed by name."""

from __future__ import annotations

import re
from typing import Any

# ``:name``, but not the second colon of a cast (``::uuid``) nor one inside a word.
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


class NamedSQL:
    """``text`` with ``:name`` parameters; ``args(**values)`` orders the values for asyncpg."""

    def __init__(self, text: str) -> None:
        self.names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.names:
                self.names.append(name)
            return f"${self.names.index(name) + 1}"

        self.text = _PARAMETER.sub(number, text)

    def args(self, **values: Any) -> list[Any]:
        missing, unknown = set(self.names) - set(values), set(values) - set(self.names)
        if missing or unknown:
            raise TypeError(f"parameters missing {sorted(missing)}, unknown {sorted(unknown)}")
        return [values[name] for name in self.names]
