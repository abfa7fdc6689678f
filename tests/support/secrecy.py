"""Checking that secrets stay out of text, without printing them when they do not."""

from __future__ import annotations

import pytest


def assert_hidden(text: str | bytes, *secrets: str | bytes, where: str = "the output") -> None:
    """Fail if any of ``secrets`` occurs in ``text``; the failure names neither."""
    for position, secret in enumerate(secrets, start=1):
        if secret and secret in text:  # type: ignore[operator]
            pytest.fail(f"secret #{position} appears in {where}", pytrace=False)
