"""A crash-safe record of a bulk run, in SQLite (standard library only).

Each input has a key (the caller's ``reference``, or a hash of its content) and a state
that is written *before* and *after* each step, so a process killed at any instant leaves
a journal that tells, for every input, whether its create request might have been sent:

``sending``
    written and committed just before the create request goes out. Found on a rerun, it
    means the process died while the request may have been in flight: the input is
    reported ``uncertain`` and only resent with ``resend_uncertain=True``.
``created``
    the API answered 202; the ticket id is stored. Never sent again.
``uncertain``
    the create failed ambiguously (timeout after sending, 5xx, dropped connection).
``rejected`` / ``failed``
    nothing was created (a 4xx, a validation error, or retries ran out before the server
    processed it); a rerun sends these again.

Writes use WAL mode with ``synchronous=NORMAL``: a committed row survives the process
being killed (SIGKILL), which is the failure this journal exists for. Each write is a
small transaction of well under a millisecond, done on the event loop thread so the order
"journal, then send" can never be reordered.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import attrs

__all__ = ["Journal", "JournalEntry"]

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
    updated_at REAL NOT NULL
)
"""


@attrs.frozen
class JournalEntry:
    """What the journal knows about one input."""

    key: str
    position: int
    reference: str | None
    state: str
    ticket_id: str | None
    status: str | None
    issue_key: str | None
    error: str | None


class Journal:
    """The SQLite journal of a bulk run (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def close(self) -> None:
        """Close the database (idempotent)."""
        self._db.close()

    def get(self, key: str) -> JournalEntry | None:
        """The entry for ``key``, if the journal has one."""
        row = self._db.execute(
            "SELECT key, position, reference, state, ticket_id, status, issue_key, error "
            "FROM inputs WHERE key = ?",
            (key,),
        ).fetchone()
        return JournalEntry(*row) if row is not None else None

    def record(
        self,
        key: str,
        position: int,
        reference: str | None,
        state: str,
        *,
        ticket_id: str | None = None,
        status: str | None = None,
        issue_key: str | None = None,
        error: str | None = None,
    ) -> None:
        """Write the state of one input and commit it before returning."""
        self._db.execute(
            "INSERT INTO inputs (key, position, reference, state, ticket_id, status, issue_key,"
            " error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET position=excluded.position,"
            " reference=excluded.reference, state=excluded.state,"
            " ticket_id=COALESCE(excluded.ticket_id, inputs.ticket_id),"
            " status=COALESCE(excluded.status, inputs.status),"
            " issue_key=COALESCE(excluded.issue_key, inputs.issue_key),"
            " error=excluded.error, updated_at=excluded.updated_at",
            (key, position, reference, state, ticket_id, status, issue_key, error, time.time()),
        )
