"""The rows of a bulk run's journal (:mod:`skala_async._journal`): its table, an entry as
read, a write waiting for a group commit."""

from __future__ import annotations

import asyncio

import attrs

from .errors import JournalError

#: ``PRAGMA application_id`` of a journal ("SKLJ"): another SQLite file is not taken for one.
APPLICATION_ID = 0x534B4C4A

_COLUMNS = (
    "key",
    "position",
    "reference",
    "state",
    "ticket_id",
    "status",
    "issue_key",
    "error",
    "updated_at",
    "version",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inputs (
    key        TEXT PRIMARY KEY,
    position   INTEGER NOT NULL,
    reference  TEXT,
    state      TEXT NOT NULL,
    ticket_id  TEXT,
    status     TEXT,
    issue_key  TEXT,
    error      TEXT,
    updated_at REAL NOT NULL,
    version    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID
"""


@attrs.frozen
class JournalEntry:
    """What the journal knows about one input (``version`` changes with every write)."""

    key: str
    position: int
    reference: str | None
    state: str
    ticket_id: str | None
    status: str | None
    issue_key: str | None
    error: str | None
    version: int = 0


@attrs.define(slots=True)
class _Pending:
    """A write of a group commit: its statement, whether the journal is checked after it
    (claims), and the future of its outcome (none for a write run at once)."""

    sql: str
    params: tuple[object, ...]
    check: bool
    future: asyncio.Future[int | JournalError] | None = None
