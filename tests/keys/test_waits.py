"""How long a throttled issuer call waits before it is tried again (docs/keys.md)."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from spacesvc.keys.issuers import requested_wait

pytestmark = pytest.mark.unit
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "3", "ratelimit-reset": str(int(NOW) + 30)}, 3.0),
        ({"retry-after": formatdate(NOW + 4, usegmt=True)}, 4.0),
        ({"ratelimit-reset": str(int(NOW) + 7)}, 7.0),
        ({"ratelimit-reset": str(int(NOW) - 5)}, 0.2),
        ({"retry-after": "soon", "ratelimit-reset": "²"}, 1.0),
        ({}, 1.0),
    ],
    ids=["retry-after first", "an HTTP date", "ratelimit-reset", "a reset passed", "unreadable", "no header"],
)
def test_a_throttled_call_waits_as_the_answer_asks(headers: dict[str, str], wait: float) -> None:
    assert requested_wait(headers, NOW) == pytest.approx(wait)
