"""A crash-safe record of a bulk run, in SQLite (standard library only).

Each input has a key (the caller's ``reference``, or a hash of its content) and a state
that is written *before* and *after* each step, so a process killed at any instant leaves
a journal that tells, for every input, whether its create request might have been sent:

``sending``
    the input's *claim*: written and committed just before the create request goes out
    (see :meth:`Journal.claim`). Found on a rerun, it means the process died while the
    request may have been in flight: the input is reported ``uncertain`` and only resent
    with ``resend_uncertain=True``.
``created``
    the API answered 202; the ticket id is stored. Never sent again.
``uncertain``
    the create failed ambiguously (timeout after sending, 5xx, dropped connection).
``rejected`` / ``failed``
    nothing was created (a 4xx, a validation error, or retries ran out before the server
    processed it); a rerun sends these again.

One run at a time: the journal file is locked (``flock``) for as long as it is open, so a
second run on it fails at once with :class:`~skala_async.errors.JournalInUseError`; the
kernel releases the lock when the process ends, even by SIGKILL. Independently of the lock,
an input is sent only after a claim that succeeds in one conditional statement (claimed
only if its row is still what the run saw, and still unsent), so no interleaving of runs
can send an input twice.

The journal must stay where it is while a run uses it: after each commit that holds a
claim (and at the end of the run) the file at its path is compared with the one held open
(device and inode), with the sizes written and with the headers SQLite writes, so a
journal deleted, replaced or truncated under a run raises
:class:`~skala_async.errors.JournalLostError` before the claimed create is sent, instead of
silently recording into a file nobody will read again.

Group commits: a bulk run claims its inputs in blocks (:meth:`Journal.claim_many`): the
next few inputs (as many as its concurrency, 16 at most) are claimed in one transaction,
with the outcomes queued since (:meth:`Journal.settle_grouped`), before the first of them
is sent. A claim is still committed, and the journal checked, before its create is sent,
so the order "journal, then send" can never be reordered; a bulk run reports an input
only once its outcome is committed. Outcomes queued while no block is claimed are
committed at most :data:`FLUSH_DELAY` seconds later (or at once, by
:meth:`Journal.commit_queued`). In a steady run that is one transaction and one check per
block of inputs. The price: a process killed mid-run also leaves the inputs claimed but
not yet sent in ``sending``, so a rerun reports them ``uncertain`` with those really in
flight; a run that ends any other way (cancelled, left early, stopped) gives back the
claims it did not send (:meth:`Journal.release`).

Writes use WAL mode with ``synchronous=NORMAL``: a committed transaction is in the
operating system's hands when the commit returns, so it survives the process being killed
(SIGKILL), the failure this journal exists for. It is not flushed to the disk at each
commit: on a power loss or an operating system crash, the last transactions before it
may be lost (the database stays consistent). A claim lost that way can let a rerun send
its input again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from ._journal_rows import _COLUMNS, _SCHEMA, APPLICATION_ID, JournalEntry, _Pending
from .errors import JournalError, JournalInUseError, JournalLostError

try:  # POSIX; elsewhere only the conditional claims keep runs apart
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["FLUSH_DELAY", "Journal", "JournalEntry"]

#: Seconds a queued outcome may wait for a block of claims to be committed with.
FLUSH_DELAY = 0.05

#: How the database file and its write-ahead log begin, once they have content.
_MAGIC = {"db": (b"SQLite format 3\x00",), "wal": (b"\x37\x7f\x06\x82", b"\x37\x7f\x06\x83")}


def _starts_well(fd: int, part: str, st: os.stat_result) -> bool:
    if st.st_size == 0:
        return True
    magic = _MAGIC[part]
    return os.pread(fd, len(magic[0]), 0) in magic  # our own descriptor; no seek


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


class Journal:
    """The SQLite journal of a bulk run (see the module docstring).

    Opening it locks it, checks that the file is a journal (or empty, or new) and that it
    can be written; every problem is a :class:`~skala_async.errors.JournalError`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fds: dict[str, int] = {}  # "db" and "wal": the files held, for identity checks
        self._sizes: dict[str, int] = {}
        self._ids: dict[str, tuple[int, int]] = {}  # device and inode of each file held
        self._db: sqlite3.Connection | None = None
        #: Writes waiting for the next group commit (see :meth:`_enqueue`).
        self._pending: list[_Pending] = []
        self._flushing: asyncio.Handle | None = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------------- opening

    def _error(self, what: str, exc: BaseException | None = None) -> JournalError:
        detail = f": {_reason(exc)}" if exc is not None else ""
        return JournalError(f"journal {str(self.path)!r}: {what}{detail}", path=str(self.path))

    def _open(self) -> None:
        name = str(self.path)
        try:
            fd = os.open(name, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise self._error("cannot be opened or created", exc) from None
        self._fds["db"] = fd
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalInUseError(
                    f"journal {name!r} is in use by another run; wait for it to end (two runs "
                    "on one journal could send an input twice)",
                    path=name,
                ) from None
            except OSError as exc:  # a file system without locks
                raise self._error("cannot be locked", exc) from None
        if not os.path.isfile(name):
            raise self._error("is not a regular file")
        try:
            db = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error("cannot be opened", exc) from None
        self._db = db
        try:
            empty = os.fstat(fd).st_size == 0
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if app_id not in (0, APPLICATION_ID) or (tables and "inputs" not in tables):
                raise self._error("is another SQLite database, not a bulk journal")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise self._error(f"cannot be switched to WAL mode (got {mode!r})")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(inputs)")}
            if "version" not in columns and columns >= set(_COLUMNS) - {"version"}:
                db.execute("ALTER TABLE inputs ADD COLUMN version INTEGER NOT NULL DEFAULT 0")
                columns.add("version")
            if not columns >= set(_COLUMNS):
                raise self._error("has an 'inputs' table that is not a bulk journal's")
            if app_id == 0:
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")
            # A write now, not at the first claim: a read-only folder or a full disk is
            # found before anything is sent. (user_version counts the runs that opened it.)
            opened = int(db.execute("PRAGMA user_version").fetchone()[0])
            db.execute(f"PRAGMA user_version={(opened + 1) % 2**31}")
        except JournalError:
            raise
        except sqlite3.DatabaseError as exc:
            what = "is not a bulk journal (not an SQLite database)" if not empty else "is unusable"
            if isinstance(exc, sqlite3.OperationalError):
                what = "cannot be written"
            raise self._error(what, exc) from None
        try:
            self._fds["wal"] = os.open(f"{name}-wal", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise self._error("its write-ahead log cannot be opened", exc) from None
        self.check()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def close(self) -> None:
        """Commit the writes still queued, close the database and release the lock
        (idempotent)."""
        if self._pending:
            self.commit_queued()
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        for fd in self._fds.values():  # after the database: its own locks stay intact
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    # ---------------------------------------------------------------------- integrity

    def check(self) -> None:
        """Raise :class:`JournalLostError` if the journal at :attr:`path` is no longer the
        file this run holds (deleted, moved, replaced) or is shorter than what was written."""
        name = str(self.path)
        for part, fd in self._fds.items():
            path = name if part == "db" else f"{name}-wal"
            if (held := self._ids.get(part)) is None:  # the file held, once
                st = os.fstat(fd)
                held = self._ids[part] = (st.st_dev, st.st_ino)
            try:
                now = os.stat(path)  # while it is the file held, its size is the held one's
            except OSError:
                self._lost("deleted" if part == "db" else "deleted (its -wal file)")
            if (now.st_dev, now.st_ino) != held:
                self._lost("replaced by another file")
            if now.st_size < self._sizes.get(part, 0) or not _starts_well(fd, part, now):
                # Shorter than written; or cut and then written past the cut, which leaves
                # zeros where the file's header was.
                self._lost("truncated" if part == "db" else "truncated (its -wal file)")
            self._sizes[part] = now.st_size

    def _lost(self, reason: str) -> NoReturn:
        name = str(self.path)
        raise JournalLostError(
            f"journal {name!r} was {reason} during the run: its record of which inputs "
            "were sent and which tickets they created is lost, so running the same "
            "command again would send them again",
            path=name,
            reason=reason,
        )

    def _write(self, sql: str, params: tuple[object, ...], *, check: bool = True) -> int:
        """Run one statement now, in one transaction with the grouped writes still queued
        (:meth:`_enqueue`), which it resolves; the number of rows it changed. With
        ``check``, the journal is checked (:meth:`check`) after the commit."""
        return self._flush([_Pending(sql, params, check)])[0]

    def _commit(self, writes: list[_Pending]) -> list[int]:
        """Run ``writes`` in one transaction; the rows each changed. The journal is checked
        after it if any of them asks (claims do, so nothing is sent on a journal that is
        lost; an outcome written to a journal lost since its claim is caught by the next
        claim or the end of the run)."""
        db = self._db
        if db is None:  # a JournalError: the futures of queued writes end with it
            raise self._error("is closed")
        try:
            if len(writes) == 1:  # autocommit: no BEGIN and COMMIT to run
                changed = [db.execute(writes[0].sql, writes[0].params).rowcount]
            else:
                db.execute("BEGIN IMMEDIATE")
                try:
                    changed = [db.execute(w.sql, w.params).rowcount for w in writes]
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            db.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            self.check()  # a journal truncated under us reads as "malformed": say so
            raise self._error("cannot be written", exc) from None
        if any(w.check for w in writes):
            self.check()
        return changed

    # ---------------------------------------------------------------------- group commits

    def _enqueue(self, sql: str, params: tuple[object, ...]) -> asyncio.Future[int | JournalError]:
        """Queue a write for the next commit: that of the next claims (:meth:`claim_many`,
        :meth:`claim`), or the one scheduled :data:`FLUSH_DELAY` seconds after the first
        write queued, whichever comes first. The future ends when it is committed, with the
        rows it changed or the :class:`JournalError` that stopped it (a result, not
        raised: nobody need be waiting for it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int | JournalError] = loop.create_future()
        self._pending.append(_Pending(sql, params, False, future))
        if self._flushing is None:
            self._flushing = loop.call_later(FLUSH_DELAY, self.commit_queued)
        return future

    def commit_queued(self) -> None:
        """Commit the queued writes now and resolve their futures (with the
        :class:`JournalError` that stopped them, if one did)."""
        with contextlib.suppress(JournalError):
            self._flush([])

    def _flush(self, writes: list[_Pending]) -> list[int]:
        """Commit the queued writes, and ``writes`` after them, in one transaction; resolve
        the futures of the queued ones; the rows each of ``writes`` changed (raises the
        :class:`JournalError` that stopped them)."""
        if self._flushing is not None:
            self._flushing.cancel()
            self._flushing = None
        queued, self._pending = self._pending, []
        if not queued and not writes:
            return []
        outcome: list[int] | JournalError
        try:
            outcome = self._commit(queued + writes)
        except JournalError as exc:
            outcome = exc
        for n, w in enumerate(queued):
            if w.future is not None and not w.future.done():
                w.future.set_result(outcome if isinstance(outcome, JournalError) else outcome[n])
        if isinstance(outcome, JournalError):
            raise outcome
        return outcome[len(queued) :]

    # ---------------------------------------------------------------------- entries

    def get(self, key: str) -> JournalEntry | None:
        """The entry for ``key``, if the journal has one."""
        if self._db is None:
            raise RuntimeError("the journal is closed")
        try:
            row = self._db.execute(
                "SELECT key, position, reference, state, ticket_id, status, issue_key, error,"
                " version FROM inputs WHERE key = ?",
                (key,),
            ).fetchone()
        except sqlite3.Error as exc:
            self.check()
            raise self._error("cannot be read", exc) from None
        return JournalEntry(*row) if row is not None else None

    def is_empty(self) -> bool:
        """Whether the journal has no entry at all (a run that finds it so need not read
        an entry before claiming it: the claim itself fails if one appeared since)."""
        if self._db is None:
            raise RuntimeError("the journal is closed")
        try:
            return self._db.execute("SELECT 1 FROM inputs LIMIT 1").fetchone() is None
        except sqlite3.Error as exc:
            self.check()
            raise self._error("cannot be read", exc) from None

    @staticmethod
    def _claim_write(
        key: str, position: int, reference: str | None, seen: JournalEntry | None, takeover: bool
    ) -> tuple[_Pending, int]:
        now = time.time()
        if seen is None:
            return _Pending(
                "INSERT INTO inputs (key, position, reference, state, updated_at, version)"
                " VALUES (?, ?, ?, 'sending', ?, 1) ON CONFLICT(key) DO NOTHING",
                (key, position, reference, now),
                True,
            ), 1
        return _Pending(
            "UPDATE inputs SET state = 'sending', position = ?, reference = ?, error = NULL,"
            " updated_at = ?, version = version + 1 WHERE key = ? AND version = ?"
            " AND (state IN ('rejected', 'failed')"
            " OR (? AND state IN ('sending', 'uncertain')))",
            (position, reference, now, key, seen.version, takeover),
            True,
        ), seen.version + 1

    def claim(
        self,
        key: str,
        position: int,
        reference: str | None,
        seen: JournalEntry | None,
        *,
        takeover: bool,
    ) -> int | None:
        """Mark ``key`` as being sent, only if it is unchanged since ``seen`` and unsent.

        One conditional INSERT or UPDATE, committed before this returns: it succeeds only
        if the row is still the one the caller read (``seen``; ``None``: no row yet) and
        its state allows a send (``rejected``/``failed``; also ``sending``/``uncertain``
        with ``takeover``, for ``resend_uncertain``; never ``created``). Returns the
        claim's version (pass it to :meth:`settle`), or ``None`` if another run changed
        the row first: read it again.
        """
        return self.claim_many([(key, position, reference, seen, takeover)])[0]

    def claim_many(
        self, claims: Sequence[tuple[str, int, str | None, JournalEntry | None, bool]]
    ) -> list[int | None]:
        """:meth:`claim` for several inputs, ``(key, position, reference, seen, takeover)``
        each, in one transaction with the writes queued so far (:meth:`_enqueue`); the
        journal is checked once, after it. The version of each claim, or ``None`` for each
        that another run changed first. Raises the :class:`JournalError` that stopped them
        (then none is claimed)."""
        made = [self._claim_write(*claim) for claim in claims]
        changed = self._flush([write for write, _ in made])
        versions = [version for _, version in made]
        return [v if n == 1 else None for v, n in zip(versions, changed, strict=True)]

    def release(self, claims: Sequence[tuple[str, int, JournalEntry | None]]) -> int:
        """Give back claims whose create was never sent, ``(key, claim, seen)`` each, in one
        transaction: each entry says again what it said before its claim (``seen``), or
        ``failed`` if there was none (so a rerun sends it). The number given back (a claim
        taken over since is left alone)."""
        now = time.time()
        writes = [
            _Pending(
                "UPDATE inputs SET state = ?, error = ?, updated_at = ?, version = version + 1"
                " WHERE key = ? AND version = ? AND state = 'sending'",
                (
                    "failed" if seen is None else seen.state,
                    "claimed, never sent: the run ended first" if seen is None else seen.error,
                    now,
                    key,
                    claim,
                ),
                False,
            )
            for key, claim, seen in claims
        ]
        return sum(self._flush(writes))

    @staticmethod
    def _settle_write(
        key: str,
        claim: int,
        state: str,
        ticket_id: str | None,
        status: str | None,
        issue_key: str | None,
        error: str | None,
    ) -> tuple[str, tuple[object, ...]]:
        return (
            "UPDATE inputs SET state = ?, ticket_id = COALESCE(?, ticket_id),"
            " status = COALESCE(?, status), issue_key = COALESCE(?, issue_key), error = ?,"
            " updated_at = ?, version = version + 1 WHERE key = ? AND version = ?",
            (state, ticket_id, status, issue_key, error, time.time(), key, claim),
        )

    def settle(
        self,
        key: str,
        claim: int,
        state: str,
        *,
        ticket_id: str | None = None,
        status: str | None = None,
        issue_key: str | None = None,
        error: str | None = None,
    ) -> bool:
        """Record how the send of a claim ended; ``False`` if the claim was taken over."""
        sql, params = self._settle_write(key, claim, state, ticket_id, status, issue_key, error)
        return self._write(sql, params, check=False) == 1

    def settle_grouped(
        self,
        key: str,
        claim: int,
        state: str,
        *,
        ticket_id: str | None = None,
        status: str | None = None,
        issue_key: str | None = None,
        error: str | None = None,
    ) -> asyncio.Future[int | JournalError]:
        """:meth:`settle`, queued for the next commit (see :meth:`_enqueue`)."""
        sql, params = self._settle_write(key, claim, state, ticket_id, status, issue_key, error)
        return self._enqueue(sql, params)

    _NOTE_TICKET = (
        "UPDATE inputs SET status = ?, issue_key = COALESCE(?, issue_key), updated_at = ?"
        " WHERE key = ? AND state = 'created' AND ticket_id = ?"
    )

    def note_ticket(self, key: str, ticket_id: str, status: str, issue_key: str | None) -> None:
        """Store the final status of a created input's ticket."""
        params = (status, issue_key, time.time(), key, ticket_id)
        self._write(self._NOTE_TICKET, params, check=False)

    async def note_ticket_grouped(
        self, key: str, ticket_id: str, status: str, issue_key: str | None
    ) -> None:
        """:meth:`note_ticket`, queued for the next commit; raises the
        :class:`JournalError` that stopped it."""
        params = (status, issue_key, time.time(), key, ticket_id)
        outcome = await self._enqueue(self._NOTE_TICKET, params)
        if isinstance(outcome, JournalError):
            raise outcome
