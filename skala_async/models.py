"""Value classes: tickets, statuses, attachments and drafts.

Everything here is a plain attrs class with no I/O and no knowledge of the wire format;
``_convert`` owns the camelCase names and ``_protocol`` the documented limits.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import html
import io
import os
import pathlib
import stat
import uuid
from collections.abc import Iterable, Mapping
from typing import IO, Any, Union, cast

import attrs

from ._limits import CONTENT_TYPES, extension_of

__all__ = [
    "Attachment",
    "FileLike",
    "SupportTicketEvent",
    "Ticket",
    "TicketDraft",
    "TicketStatus",
]


class TicketStatus(str, enum.Enum):
    """Lifecycle status of a support ticket.

    ``PENDING`` until Ripio has processed it, then ``CREATED`` (an issue key exists) or
    ``FAILED``. A status the server sends that this version does not know is kept as a
    pseudo-member (``TicketStatus("ARCHIVED").value == "ARCHIVED"``), never a crash; its
    ``known`` property is ``False``.
    """

    PENDING = "PENDING"
    CREATED = "CREATED"
    FAILED = "FAILED"

    @classmethod
    def _missing_(cls, value: object) -> TicketStatus | None:
        if not isinstance(value, str) or not value:
            return None
        member = str.__new__(cls, value)
        member._name_ = value
        member._value_ = value
        return member

    @property
    def known(self) -> bool:
        """Whether this is one of the documented statuses."""
        return self.value in _KNOWN_STATUSES

    @property
    def is_final(self) -> bool:
        """``True`` for ``CREATED`` and ``FAILED``: the API documents no transition out of them.

        An unknown status is not final: a waiting handle keeps polling until its deadline.
        """
        return self.value in ("CREATED", "FAILED")

    def __str__(self) -> str:
        return self.value


_KNOWN_STATUSES = frozenset({"PENDING", "CREATED", "FAILED"})


def _html_escape(value: object) -> str:
    return html.escape(str(value), quote=True)


@attrs.frozen
class Ticket:
    """The state of a support ticket as the API reported it.

    Attributes:
        ticket_id: Ripio's id for the ticket, also the key that correlates webhook events.
        status: ``PENDING``, ``CREATED`` or ``FAILED`` (or a status this version does not know).
        issue_key: the human-readable reference such as ``"SUP-1234"``; ``None`` until
            ``CREATED`` and on ``FAILED``.
    """

    ticket_id: uuid.UUID
    status: TicketStatus
    issue_key: str | None = None

    @property
    def is_final(self) -> bool:
        """Whether the ticket reached ``CREATED`` or ``FAILED``."""
        return self.status.is_final

    def to_dict(self) -> dict[str, str | None]:
        """The ticket as a JSON-ready dict with snake_case keys.

        ``{"ticket_id": "9b1deb4d-...", "status": "CREATED", "issue_key": "SUP-1234"}``:
        the id as its canonical string, the status as its value (also one this version
        does not know), ``issue_key`` ``None`` until ``CREATED``. The same names and
        encodings as the columns of :meth:`BulkReport.to_records
        <skala_async.bulk.BulkReport.to_records>`, so ``json.dumps`` and
        ``pandas.DataFrame`` take either as is.
        """
        return {
            "ticket_id": str(self.ticket_id),
            "status": self.status.value,
            "issue_key": self.issue_key,
        }

    def __repr__(self) -> str:
        # The status as its plain value: ``status='CREATED'`` compares equal to the member.
        return (
            f"Ticket(ticket_id={self.ticket_id!r}, status={self.status.value!r}, "
            f"issue_key={self.issue_key!r})"
        )

    def _repr_html_(self) -> str:
        rows = (
            ("ticket id", self.ticket_id),
            ("status", self.status.value),
            ("issue key", self.issue_key or "—"),
        )
        body = "".join(
            f"<tr><th style='text-align:left'>{_html_escape(k)}</th><td>{_html_escape(v)}</td></tr>"
            for k, v in rows
        )
        return f"<table class='skala-ticket'>{body}</table>"


FileLike = Union[str, "os.PathLike[str]", "Attachment", IO[bytes]]
"""What ``files=`` accepts: a path, an :class:`Attachment` or an open binary file."""


def content_type_for(filename: str) -> str:
    """The content type sent for ``filename``, from its extension."""
    return CONTENT_TYPES.get(extension_of(filename), "application/octet-stream")


def _given_name(name: str) -> str:
    """A file name given by the caller, cut after its last ``/`` or ``\\`` on every
    platform (it may be a path from another system); names read from the local file system
    are taken as they are."""
    if not isinstance(cast(object, name), str):
        raise TypeError(f"filename must be a string, not {type(name).__name__}")
    return name.replace("\\", "/").rsplit("/", 1)[-1]


@attrs.frozen(repr=False)
class Attachment:
    """One file to attach to a ticket, streamed from disk, memory or an open binary file.

    Build one with :meth:`from_path`, :meth:`from_bytes` or :meth:`from_file`. A path is
    opened again for every attempt and read in chunks, so a retried request sends the
    same bytes and memory use does not grow with file size (``create_ticket`` reads a
    file of up to 64 KiB once, when it measures it, and sends that content every time).
    An open file object is read from its position at the time the attachment was made, and
    is never closed by us.

    The name sent is a file's own name: ``a\\b.pdf``, a legal file name on Linux and macOS,
    is sent whole there. A name given with ``filename=`` may come from another machine (a
    browser upload from Windows), so it is cut after its last ``/`` or ``\\`` on every
    platform: no directory of anyone's leaves in it.

    Attributes:
        filename: the name sent to the server (a basename, never a directory path).
        content_type: chosen from the extension (``application/pdf``, ``image/png`` ...).
        size: size in bytes, or ``None`` if it could not be determined (a validation error).
    """

    filename: str
    content_type: str
    size: int | None
    path: pathlib.Path | None = None
    data: bytes | None = None
    fileobj: IO[bytes] | None = None
    offset: int = 0
    #: Why this attachment cannot be sent (missing file, a directory ...), found when made.
    problem: str | None = None

    def __attrs_post_init__(self) -> None:
        sources = (self.path, self.data, self.fileobj)
        if sum(source is not None for source in sources) != 1:
            raise ValueError(
                "an Attachment needs exactly one source: build it with Attachment.from_path, "
                "from_bytes or from_file"
            )
        if self.data is not None and self.size != len(self.data):
            raise ValueError(f"size {self.size!r} does not match the {len(self.data)} bytes given")

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, filename: str | None = None) -> Attachment:
        """An attachment read from ``path`` when the request is sent.

        A missing, unreadable or non-regular file is not an exception here: it is reported
        by ``create_ticket``'s validation together with every other problem.
        """
        p = pathlib.Path(path)
        name = _given_name(filename) if filename is not None else p.name
        size: int | None = None
        problem: str | None = None
        try:
            st = p.stat()
        except FileNotFoundError:
            problem = f"{p.name!r} does not exist"
        except ValueError:  # a NUL in the path: no such file can exist
            problem = f"{p.name!r} is not a valid path (it contains a NUL character)"
        except OSError as exc:
            problem = f"{p.name!r} cannot be read ({exc.strerror or type(exc).__name__})"
        else:
            if not stat.S_ISREG(st.st_mode):
                problem = f"{p.name!r} is not a regular file"
            elif not os.access(p, os.R_OK):
                problem = f"{p.name!r} is not readable"
            else:
                size = st.st_size
        return cls(name, content_type_for(name), size, path=p, problem=problem)

    @classmethod
    def from_bytes(cls, data: bytes, *, filename: str) -> Attachment:
        """An attachment held in memory (small generated files, screenshots, logs)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        name = _given_name(filename)
        return cls(name, content_type_for(name), len(data), data=data)

    @classmethod
    def from_file(cls, fileobj: IO[bytes], *, filename: str | None = None) -> Attachment:
        """An attachment streamed from an open, seekable binary file object.

        The object is read from its current position each time the request is sent, and
        is left open: closing it stays the caller's job.
        """
        if isinstance(cast(object, fileobj), io.TextIOBase):
            raise TypeError("attachments need a binary file object (open it with 'rb')")
        if filename is not None:
            name = _given_name(filename)
        else:
            raw_name = getattr(fileobj, "name", None)
            name = os.path.basename(raw_name) if isinstance(raw_name, str) else ""
        problem: str | None = None
        size: int | None = None
        offset = 0
        try:
            if not fileobj.seekable():
                raise OSError("not seekable")
            offset = fileobj.tell()
            end = fileobj.seek(0, io.SEEK_END)
            fileobj.seek(offset)
            size = end - offset
        except (OSError, ValueError, AttributeError):
            problem = f"{name or 'file object'!r} is not a seekable binary file"
        return cls(
            name, content_type_for(name), size, fileobj=fileobj, offset=offset, problem=problem
        )

    @classmethod
    def coerce(cls, value: FileLike) -> Attachment:
        """Turn what ``files=`` accepts into an :class:`Attachment`."""
        obj: object = value
        if isinstance(obj, Attachment):
            return obj
        if isinstance(obj, (str, os.PathLike)):
            return cls.from_path(obj)
        if isinstance(obj, (bytes, bytearray, memoryview)):
            raise TypeError("pass bytes as Attachment.from_bytes(data, filename=...)")
        if hasattr(obj, "read") and hasattr(obj, "seek"):
            return cls.from_file(cast("IO[bytes]", obj))
        raise TypeError(f"cannot attach a {type(obj).__name__}; pass a path or an Attachment")

    def sha256(self) -> str:
        """The SHA-256 of the content, read in chunks (handy to compare with the sandbox)."""
        h = hashlib.sha256()
        for chunk in self.iter_chunks():
            h.update(chunk)
        return h.hexdigest()

    def iter_chunks(self, chunk_size: int = 256 * 1024) -> _ChunkIter:
        """Yield the content in chunks; blocking I/O, run it in a thread from async code."""
        return _ChunkIter(self, chunk_size)

    def __repr__(self) -> str:
        source = (
            f"path={self.path.name!r}"
            if self.path is not None
            else "bytes"
            if self.data is not None
            else "file object"
        )
        return (
            f"Attachment(filename={self.filename!r}, content_type={self.content_type!r}, "
            f"size={self.size!r}, {source})"
        )


#: Files given by path up to this size are read when they are measured (see
#: :func:`read_ahead`): one worker-thread hop per create instead of two.
READ_AHEAD_MAX = 64 * 1024


@attrs.frozen(repr=False)
class _ReadAhead(Attachment):
    """An attachment from a path whose content was read together with its measuring.

    ``content`` is exactly ``size`` bytes, read right after the ``stat`` (and the end of
    the file checked); every attempt sends it, so a retried request sends the same bytes.
    Shown and validated like the path attachment it was made from.
    """

    content: bytes = attrs.field(default=b"", eq=False)


def read_ahead(attachment: Attachment) -> Attachment:
    """``attachment`` with its content read now, if it is a small file from a path.

    Blocking I/O: call it in a worker thread. Anything else (a larger file, bytes, an open
    file, one with a problem, one that no longer has the size it was measured at or cannot
    be read) comes back unchanged, to be read (or reported) when the request is sent.
    """
    a = attachment
    if (
        type(a) is not Attachment
        or a.path is None
        or a.problem is not None
        or a.size is None
        or a.size > READ_AHEAD_MAX
    ):
        return a
    try:
        with a.path.open("rb") as f:
            content = f.read(a.size + 1)  # one byte more: a file that grew is not read ahead
    except OSError:
        return a
    if len(content) != a.size:
        return a
    return _ReadAhead(
        a.filename, a.content_type, a.size, path=a.path, problem=None, content=content
    )


class _ChunkIter:
    """Iterator over an attachment's bytes; opens paths itself and closes what it opened."""

    def __init__(self, attachment: Attachment, chunk_size: int) -> None:
        self._a = attachment
        self._chunk_size = chunk_size
        self._f: IO[bytes] | None = None
        self._pos = 0
        self._own = False
        self._remaining = attachment.size if attachment.size is not None else -1
        #: The content was read to its end, and the end checked (exactly ``size`` bytes).
        self.done = False

    def __iter__(self) -> _ChunkIter:
        return self

    def _open(self) -> IO[bytes]:
        a = self._a
        if isinstance(a, _ReadAhead):
            self._own = True
            return io.BytesIO(a.content)
        if a.path is not None:
            self._own = True
            return a.path.open("rb")
        if a.data is not None:
            self._own = True
            return io.BytesIO(a.data)
        if a.fileobj is None:  # pragma: no cover - constructors always set a source
            raise ValueError("attachment has no content")
        a.fileobj.seek(a.offset)
        return a.fileobj

    def __next__(self) -> bytes:
        if self.done:
            raise StopIteration
        if self._f is None:
            self._f = self._open()
        if self._remaining == 0:  # an empty file
            self._check_end()
            raise StopIteration
        want = self._chunk_size if self._remaining < 0 else min(self._chunk_size, self._remaining)
        chunk = self._f.read(want)
        if not chunk:
            self.close()
            self.done = True
            if self._remaining > 0:
                size = self._a.size or 0
                raise OSError(
                    f"{self._a.filename!r} became shorter while it was being read "
                    f"({size - self._remaining} of {size} bytes)"
                )
            raise StopIteration
        if self._remaining >= 0:
            self._remaining -= len(chunk)
            if self._remaining == 0:  # checked with the last read, not one more round trip
                self._check_end()
        return chunk

    def _check_end(self) -> None:
        """Every byte measured was read: one more means the file grew since."""
        assert self._f is not None
        extra = self._f.read(1)
        self.close()
        self.done = True
        if extra:
            raise OSError(
                f"{self._a.filename!r} became longer while it was being read "
                f"(more than the {self._a.size} bytes it had)"
            )

    def close(self) -> None:
        if self._f is not None and self._own:
            self._f.close()
        self._f = None


def _is_one_file(obj: object) -> bool:
    """Whether ``files=`` holds one file (a path, an :class:`Attachment`, an open file)
    rather than an iterable of them."""
    return isinstance(obj, (str, os.PathLike, Attachment)) or (
        hasattr(obj, "read") and hasattr(obj, "seek")
    )


def _coerce_files(files: FileLike | Iterable[FileLike]) -> tuple[Attachment, ...]:
    obj: object = files
    if _is_one_file(obj):
        return (Attachment.coerce(cast("FileLike", obj)),)  # one file, not an iterable
    return tuple(Attachment.coerce(f) for f in cast("Iterable[FileLike]", obj))


@attrs.frozen
class TicketDraft:
    """Everything needed to create one ticket, checked by the client before sending.

    Attributes:
        customer_id: the partner's customer (a UUID string or :class:`uuid.UUID`).
        summary: one line, at most 240 characters.
        description: at most 5000 characters.
        files: up to 5 attachments (paths or :class:`Attachment`).
        reference: an optional key of the caller's (bulk submission uses it to track inputs).
    """

    customer_id: str | uuid.UUID
    summary: str
    description: str
    files: tuple[Attachment, ...] = attrs.field(default=(), converter=_coerce_files)
    reference: str | None = None


@attrs.frozen
class SupportTicketEvent:
    """A verified ``SUPPORT_TICKET.*`` webhook event (reference section 6.3).

    Made by :func:`skala_async.webhooks.parse_event` from the raw body Ripio POSTed.

    Attributes:
        event_type: the envelope's ``eventType``, e.g. ``"SUPPORT_TICKET.CREATED"``.
        issued_at: the envelope's ``issueDatetime``, an aware UTC :class:`~datetime.datetime`.
        ticket: the ``supportTicket`` object as a :class:`Ticket`.
        extra: what this version does not know, kept as sent: unknown top-level keys, and
            unknown keys of ``supportTicket`` under ``extra["supportTicket"]`` (for example
            a ``customerId``). Empty when the event had nothing more.
    """

    event_type: str
    issued_at: datetime.datetime
    ticket: Ticket
    extra: Mapping[str, Any] = attrs.field(factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict with snake_case keys, the ticket's fields flat.

        ``event_type``, ``issued_at`` (ISO 8601 with its UTC offset), ``ticket_id``,
        ``status``, ``issue_key`` (as :meth:`Ticket.to_dict`) and ``extra`` (what the
        event carried beyond those, as sent: already JSON).
        """
        return {
            "event_type": self.event_type,
            "issued_at": self.issued_at.isoformat(),
            **self.ticket.to_dict(),
            "extra": dict(self.extra),
        }

    @property
    def status(self) -> TicketStatus:
        """The ticket's status in this event (``CREATED`` or ``FAILED``)."""
        return self.ticket.status

    @property
    def ticket_id(self) -> uuid.UUID:
        """The ticket's id: the key that correlates the event with a created ticket."""
        return self.ticket.ticket_id
