"""The versioned-resource core: what a resource declared on it gets without writing it again
(preconditions worded for it, notifications that carry its version, a place in the audit trail's
filters, and the live state's copy dropped by its own notifications only)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import pytest

from spacesvc.audit.model import ACTIONS, RESOURCE_TYPES
from spacesvc.changes import Change, at, parse
from spacesvc.errors import PreconditionFailed
from spacesvc.live import LiveState
from spacesvc.resources.sql import NamedSQL
from spacesvc.resources.versioned import Preconditions, VersionedResource

pytestmark = pytest.mark.unit


@dataclass(frozen=True)
class Note:
    id: str
    version: int


async def no_note(conn: asyncpg.Connection) -> Note | None:
    return None


NOTE: VersionedResource[Note] = VersionedResource(
    name="note",
    table="notes",
    lock_id=0x5BACE5_0F00,
    audit_type="note",
    title="The note",
    noun="the note",
    absent="there is no note",
    load=no_note,
    actions=("note.pinned",),
)


def test_a_declared_resource_is_a_resource_type_and_its_actions_are_actions_of_the_audit_trail() -> None:
    assert "note" in RESOURCE_TYPES and "note.pinned" in ACTIONS
    assert "spaces_config" in RESOURCE_TYPES and "created" in ACTIONS


def test_preconditions_are_worded_for_the_resource() -> None:
    with pytest.raises(PreconditionFailed, match="The note exists already"):
        Preconditions(create_only=True).check(Note("n1", 1), NOTE)
    with pytest.raises(PreconditionFailed, match="expected version 2, but there is no note") as failed:
        Preconditions(if_match=2).check(None, NOTE)
    assert failed.value.hint == "Re-read the note (GET) and retry with its ETag."
    with pytest.raises(PreconditionFailed, match="the current version is 3"):
        Preconditions(if_match=2).check(Note("n1", 3), NOTE)
    Preconditions(if_match=3).check(Note("n1", 3), NOTE)


def test_a_notification_names_the_resource_and_the_version_a_change_left() -> None:
    assert parse(at("note", "n1", 7)) == Change("note", "n1", 7)
    assert parse("note") == Change("note")
    assert parse("tokens") == Change("tokens")
    assert NOTE.notification_sql("updated") == "'note ' || updated.id::text || ' ' || updated.version::text"


async def test_memory_drops_a_resource_only_for_its_own_newer_changes() -> None:
    live = LiveState()
    live.listening = True
    async with live.writing(NOTE) as write:
        assert write.remembered is None
        write.kept(Note("n1", 4))
    live.notified(at("note", "n1", 4))  # its own write coming back
    live.notified(at("config", "c1", 9))  # another resource's change
    assert live.remembered(NOTE) == Note("n1", 4)
    live.notified(at("note", "n1", 5))
    assert live.remembered(NOTE) is None


def test_named_parameters_are_numbered_in_order_of_first_use_and_casts_are_left_alone() -> None:
    sql = NamedSQL("UPDATE t SET a = :alpha, b = :beta WHERE id = :id::uuid AND a <> :alpha")
    assert sql.text == "UPDATE t SET a = $1, b = $2 WHERE id = $3::uuid AND a <> $1"
    assert sql.args(id="x", beta=2, alpha=1) == [1, 2, "x"]
    with pytest.raises(TypeError, match="missing"):
        sql.args(alpha=1)
