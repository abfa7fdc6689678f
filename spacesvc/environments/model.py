"""An environment, and what its name may be."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

NAME = re.compile(r"^[a-z0-9-]{1,63}$")


@dataclass(frozen=True)
class Environment:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class SpacesEnablement:
    """An environment, and whether the Spaces configuration is enabled for it."""

    id: str
    name: str
    spaces_enabled: bool
