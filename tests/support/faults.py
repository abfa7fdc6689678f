"""Failures injected into a real PostgreSQL, to show what a write that fails half-way leaves."""

from __future__ import annotations

# Every UPDATE of the configuration row fails: a write has then stored its secret, not its row.
FAIL_ROW_UPDATES = """
CREATE FUNCTION fail_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'injected failure after the secret was written'; END $$;
CREATE TRIGGER fail_update BEFORE UPDATE ON spaces_config FOR EACH ROW EXECUTE FUNCTION fail_update();
"""
