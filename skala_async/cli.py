"""``skala-tickets``: create and follow Skala support tickets from a shell, or try it all
against a local sandbox.

::

    skala-tickets demo                  # in-process sandbox, a few tickets, a table
    skala-tickets sandbox --port 8000   # serve a fake of the API for your own code
    skala-tickets create --customer-id ID --summary S --description D [--file F]... [--wait]
    skala-tickets get TICKET_ID
    skala-tickets wait TICKET_ID [--timeout S]
    skala-tickets webhooks listen --port N   # print verified webhooks ($SKALA_WEBHOOK_SECRET)
    skala-tickets webhooks sign FILE         # the signature header for a test payload

``create``, ``get`` and ``wait`` take their credentials from ``--client-id`` /
``--client-secret`` (or ``--token``) and ``--base-url``, which default to the environment
variables ``SKALA_CLIENT_ID``, ``SKALA_CLIENT_SECRET`` and ``SKALA_BASE_URL``. Prefer the
environment for the secret: command lines are visible to other users of the machine.

``--json`` prints one JSON object on stdout (a list for ``demo``) and nothing else there,
errors included; ``-v`` logs the library's requests to stderr. Secrets are never printed.

Exit codes:

====  =====================================================================================
0     success: the ticket is CREATED (or was accepted, without ``--wait``; ``get`` of a
      PENDING ticket); the demo ran as intended; the sandbox was stopped with Ctrl-C
1     the ticket ended FAILED (Ripio could not register it: create a new one)
2     usage error, or input that breaks a documented limit (every problem is listed)
3     the API refused the request: authentication, 20061 (support tickets not enabled for
      the account), 400 (e.g. a customer without email), 404, or another error status
4     transport error (no usable answer), or a create whose outcome is unknown: the ticket
      may exist, so check before creating it again
5     the wait timed out; the ticket may still finish (run ``wait`` again)
70    internal error (a bug in skala-tickets: please report it)
130   interrupted (Ctrl-C)
====  =====================================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from ._limits import MIB
from ._version import __version__
from ._waiting import DEFAULT_WAIT_TIMEOUT
from .client import SkalaClient
from .errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    CreateOutcomeUnknownError,
    SkalaError,
    SupportTicketsNotEnabledError,
    TicketFailedError,
    TicketNotFoundError,
    TransportError,
    UploadAbortedError,
    ValidationError,
    WaitTimeoutError,
)
from .models import Ticket, TicketStatus

if TYPE_CHECKING:
    import pathlib

    from ._waiting import TicketHandle
    from .testing import SkalaSandbox

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_TIMEOUT",
    "EXIT_TRANSPORT",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_TRANSPORT = 4
EXIT_TIMEOUT = 5
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

PROG = "skala-tickets"
#: Attachments larger than this (together) get a progress bar when stderr is a terminal.
PROGRESS_THRESHOLD = MIB
DEMO_DELAY = (0.5, 2.0)

EPILOG = """\
credentials (create, get, wait): --client-id/--client-secret or --token, and --base-url;
  they default to SKALA_CLIENT_ID, SKALA_CLIENT_SECRET and SKALA_BASE_URL (default: Ripio's
  sandbox). Prefer the environment for secrets: command lines are visible to other users.

exit codes:
  0    success (ticket CREATED; accepted without --wait; demo ran; sandbox stopped)
  1    the ticket ended FAILED
  2    usage error, or input that breaks a documented limit (every problem is listed),
       or an attachment that changed while it was sent (no ticket was created)
  3    the API refused the request (authentication, 20061 not enabled, 400, 404, ...)
  4    transport error, or create outcome unknown (the ticket may exist: check first)
  5    the wait timed out (the ticket may still finish: run 'wait' again)
  70   internal error (a bug: please report it)
  130  interrupted (Ctrl-C)

(bulk has its own exit codes: see "bulk --help")
"""

log = logging.getLogger("skala_async.cli")


# ------------------------------------------------------------------------------ failures


class _Failure(Exception):
    """Ends a command with an exit code, a one-line message and optional problems."""

    def __init__(
        self,
        code: int,
        message: str,
        problems: Sequence[str] = (),
        *,
        hint: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = tuple(problems)
        self.hint = hint
        self.info = info or {}


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------ terminal text

#: Terminal escape sequences, whole: CSI (``ESC [ ... m``, also its one-byte C1 form),
#: OSC (``ESC ] ... BEL`` or ``ESC \``: window titles, hyperlinks, clipboard), DCS, SOS,
#: PM and APC strings, and two-character escapes (``ESC c`` resets the terminal).
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
#: Characters a terminal acts on rather than shows: C0 and C1 controls, DEL, and the
#: bidirectional overrides, embeddings, isolates and marks that reorder what is shown
#: (and the Unicode line and paragraph separators).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
_CONTROL_BUT_NEWLINE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)


def terminal_safe(text: str, *, newlines: bool = False) -> str:
    """``text`` without anything a terminal would act on: escape sequences, control
    characters and bidi controls are removed (a tab becomes a space). Every line of human
    output goes through it, since server-supplied text (issue keys, statuses, error
    messages) must not retitle, clear or reorder the user's terminal. ``newlines=True``
    keeps line breaks (a logged traceback)."""
    text = _ESCAPE_SEQUENCE.sub("", text).replace("\t", " ")
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub("", text)


def _api_problems(exc: ApiError) -> list[str]:
    """The server's per-field errors (``detail.errors``), when it sent any."""
    errors = exc.detail.get("errors")
    problems: list[str] = []
    if isinstance(errors, dict):
        for field, messages in errors.items():
            items = messages if isinstance(messages, list) else [messages]
            problems.extend(f"{field}: {m}" for m in items)
    elif isinstance(errors, list):
        problems.extend(str(m) for m in errors)
    return problems


def _failure_for(exc: SkalaError, ticket_id: uuid.UUID | None, prog: str) -> _Failure:
    """Map a library error to an exit code and a message that says what to do."""
    info: dict[str, Any] = {"exception": type(exc).__name__}
    if isinstance(exc, ValidationError):
        count = len(exc.problems)
        head = "1 problem" if count == 1 else f"{count} problems"
        return _Failure(EXIT_USAGE, f"invalid input ({head}):", exc.problems, info=info)
    if isinstance(exc, ApiError):
        info.update(http_status=int(exc.status), code=exc.code, type=exc.type)
        if isinstance(exc, SupportTicketsNotEnabledError):
            return _Failure(EXIT_REFUSED, _one_line(str(exc)), info=info)
        if isinstance(exc, AuthenticationError):
            return _Failure(
                EXIT_REFUSED,
                f"authentication failed ({_one_line(str(exc))})",
                hint="check --client-id/--client-secret (or SKALA_CLIENT_ID/SKALA_CLIENT_SECRET) "
                "and --base-url: credentials differ between sandbox and production",
                info=info,
            )
        if isinstance(exc, TicketNotFoundError):
            return _Failure(EXIT_REFUSED, f"not found: {_one_line(str(exc))}", info=info)
        if isinstance(exc, BadRequestError):
            return _Failure(
                EXIT_REFUSED,
                f"the API rejected the request: {_one_line(str(exc))}",
                _api_problems(exc),
                info=info,
            )
        return _Failure(
            EXIT_REFUSED, f"the API refused the request: {_one_line(str(exc))}", info=info
        )
    if isinstance(exc, CreateOutcomeUnknownError):
        return _Failure(
            EXIT_TRANSPORT,
            f"outcome unknown: {_one_line(str(exc))}",
            hint="the ticket may exist: do not simply run this command again",
            info=info,
        )
    if isinstance(exc, TransportError):
        return _Failure(EXIT_TRANSPORT, f"network error: {_one_line(str(exc))}", info=info)
    if isinstance(exc, UploadAbortedError):
        return _Failure(
            EXIT_USAGE,
            f"upload cut off: {_one_line(str(exc))}",
            hint="no ticket was created: run the command again once the files stay put",
            info=info,
        )
    if isinstance(exc, WaitTimeoutError):
        resume = f" (resume with: {prog} wait {ticket_id})" if ticket_id is not None else ""
        return _Failure(EXIT_TIMEOUT, _one_line(str(exc)) + resume, info=info)
    if isinstance(exc, TicketFailedError):
        return _Failure(EXIT_FAILED, _one_line(str(exc)), info=info)
    return _Failure(EXIT_REFUSED, _one_line(str(exc)), info=info)


# ------------------------------------------------------------------------------ output


class _Run:
    """What one invocation knows: output mode, and the ticket it is working on."""

    def __init__(self, args: argparse.Namespace, prog: str) -> None:
        self.args = args
        self.prog = prog
        self.json: bool = bool(args.json)
        self.ticket_id: uuid.UUID | None = None
        self.ticket: Ticket | None = None
        self.phase = ""
        #: What the command has done so far, said when it is interrupted (bulk's counts).
        self.interrupted_note: Callable[[], str] | None = None

    @property
    def stdout(self) -> TextIO:
        return sys.stdout

    @property
    def stderr(self) -> TextIO:
        return sys.stderr

    def say(self, text: str = "") -> None:
        """A line of human output on stdout (suppressed with --json)."""
        if not self.json:
            print(terminal_safe(text), file=self.stdout, flush=True)

    def emit(self, obj: object) -> None:
        """The one JSON document of a --json run."""
        if self.json:
            print(json.dumps(obj, ensure_ascii=False), file=self.stdout, flush=True)

    def error(self, message: str, problems: Sequence[str] = (), hint: str | None = None) -> None:
        lines = [f"{self.prog}: error: {terminal_safe(message)}"]
        lines.extend(f"  - {terminal_safe(p)}" for p in problems)
        if hint:
            lines.append(f"  hint: {terminal_safe(hint)}")
        print("\n".join(lines), file=self.stderr, flush=True)

    def ticket_record(self, *, exit_code: int, error: dict[str, Any] | None) -> dict[str, Any]:
        ticket = self.ticket
        return {
            "ticket_id": str(self.ticket_id) if self.ticket_id is not None else None,
            "status": ticket.status.value if ticket is not None else None,
            "issue_key": ticket.issue_key if ticket is not None else None,
            "exit_code": exit_code,
            "error": error,
        }

    def fail(self, failure: _Failure) -> int:
        self.error(failure.message, failure.problems, failure.hint)
        if self.json:
            error = {
                "message": failure.message,
                "problems": list(failure.problems),
                **failure.info,
            }
            if failure.hint:
                error["hint"] = failure.hint
            if self.args.command in ("create", "get", "wait"):
                self.emit(self.ticket_record(exit_code=failure.code, error=error))
            else:
                self.emit({"exit_code": failure.code, "error": error})
        return failure.code

    def interrupted(self) -> int:
        if self.args.command == "sandbox":
            print("sandbox stopped", file=self.stderr, flush=True)
            return EXIT_OK
        if self.args.command == "webhooks":
            print("webhook listener stopped", file=self.stderr, flush=True)
            return EXIT_OK
        info: dict[str, Any] = {"exception": "Interrupted"}
        if self.args.command == "bulk" and self.args.validate_only:
            message = "interrupted while checking the file (nothing was sent)"
        elif self.args.command == "bulk":
            message = (
                "interrupted; run the same command again to continue from the journal "
                "(inputs that were being sent are reported uncertain, not resent)"
            )
            if self.interrupted_note is not None:
                so_far = self.interrupted_note()
                message = f"interrupted after: {so_far}; " + message[len("interrupted; ") :]
                info["so_far"] = so_far
        elif self.phase == "creating":
            message = (
                "interrupted during the create request: the ticket may or may not exist; "
                "check before creating it again"
            )
        elif self.phase == "waiting" and self.ticket_id is not None:
            message = (
                f"interrupted; ticket {self.ticket_id} exists and is still being processed "
                f"(resume with: {self.prog} wait {self.ticket_id})"
            )
        else:
            message = "interrupted"
        return self.fail(_Failure(EXIT_INTERRUPTED, message, info=info))


def _status_line(ticket: Ticket) -> str:
    return f"{ticket.status.value} {ticket.issue_key}" if ticket.issue_key else ticket.status.value


def _exit_for_ticket(ticket: Ticket) -> int:
    return EXIT_FAILED if ticket.status is TicketStatus.FAILED else EXIT_OK


# ------------------------------------------------------------------------------ progress


def bar(width: int, done: int, total: int) -> str:
    """``#####.....``: ``done`` of ``total`` as a bar ``width`` characters wide."""
    filled = width * min(done, total) // total if total > 0 else width
    return "#" * filled + "." * (width - filled)


class StatusLine:
    """A line redrawn in place on a stream (stderr); :meth:`finish` ends it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._drawn = False

    def draw(self, text: str) -> None:
        """Replace the line with ``text``."""
        self.stream.write(f"\r{text}")
        self.stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """End the line (if anything was drawn)."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


class ProgressBar(StatusLine):
    """``[#####.....] 42% 10.5/25.0 MiB`` redrawn in place on a stream (stderr)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        super().__init__(stream)
        self.width = width
        self._last_percent = -1

    def __call__(self, sent: int, total: int) -> None:
        if total <= 0:
            return
        sent = min(max(sent, 0), total)
        percent = sent * 100 // total
        if percent == self._last_percent:
            return
        self._last_percent = percent
        self.draw(
            f"[{bar(self.width, sent, total)}] {percent}% {sent / MIB:.1f}/{total / MIB:.1f} MiB"
        )


def _attachment_bytes(paths: Sequence[str]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):  # validation reports it, with the other problems
            total += os.path.getsize(path)
    return total


def _progress_bar(args: argparse.Namespace, stream: TextIO) -> ProgressBar | None:
    files: list[str] = args.file or []
    if not files or args.progress is False:
        return None
    if args.progress:
        return ProgressBar(stream)
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty and _attachment_bytes(files) > PROGRESS_THRESHOLD:
        return ProgressBar(stream)
    return None


# ------------------------------------------------------------------------------ client


def _make_client(args: argparse.Namespace) -> SkalaClient:
    overrides: dict[str, Any] = {"allow_insecure_http": args.allow_insecure_http}
    if args.proxy is not None:
        overrides["proxy"] = args.proxy
    if args.ca_file is not None:
        overrides["ssl"] = _ssl_context(args.ca_file)
    if args.base_url:
        overrides["base_url"] = args.base_url
    if args.token is not None:
        if args.client_id or args.client_secret:
            raise _Failure(EXIT_USAGE, "pass either --token or --client-id/--client-secret")
        if not args.token:
            raise _Failure(EXIT_USAGE, "--token must not be empty")
        overrides.update(token=args.token, client_id=None, client_secret=None)
    else:
        client_id = args.client_id or os.environ.get("SKALA_CLIENT_ID")
        client_secret = args.client_secret or os.environ.get("SKALA_CLIENT_SECRET")
        missing = [
            name
            for name, value in (
                ("--client-id (or SKALA_CLIENT_ID)", client_id),
                ("--client-secret (or SKALA_CLIENT_SECRET)", client_secret),
            )
            if not value
        ]
        if missing:
            raise _Failure(
                EXIT_USAGE,
                "credentials missing: " + " and ".join(missing) + " (or pass --token)",
            )
        overrides.update(client_id=client_id, client_secret=client_secret)
    try:
        return SkalaClient.from_env(**overrides)
    except (ValueError, TypeError) as exc:
        message = _one_line(str(exc)).replace("allow_insecure_http=True", "--allow-insecure-http")
        raise _Failure(EXIT_USAGE, message) from None


def _ssl_context(ca_file: str) -> ssl.SSLContext:
    """A verifying TLS context that trusts the certificates in ``ca_file``."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        raise _Failure(EXIT_USAGE, f"--ca-file: {ca_file!r} does not exist") from None
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise _Failure(
            EXIT_USAGE, f"--ca-file: {ca_file!r} holds no usable PEM certificates ({exc})"
        ) from None


def _read_description(args: argparse.Namespace) -> str:
    if args.description is not None:
        return str(args.description)
    path: str = args.description_file
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise _Failure(EXIT_USAGE, f"cannot read --description-file {path!r}: {reason}") from None


# ------------------------------------------------------------------------------ commands


async def _cmd_create(run: _Run) -> int:
    args = run.args
    description = _read_description(args)
    files: list[str] = args.file or []
    bar = _progress_bar(args, run.stderr)
    async with _make_client(args) as client:
        run.phase = "creating"
        try:
            handle = await client.create_ticket(
                args.customer_id, args.summary, description, files, progress=bar
            )
        finally:
            if bar is not None:
                bar.finish()
        run.ticket_id, run.ticket = handle.ticket_id, handle.ticket
        run.phase = "created"
        if not args.wait:
            run.say(str(handle.ticket_id))
            run.emit(run.ticket_record(exit_code=EXIT_OK, error=None))
            return EXIT_OK
        run.say(str(handle.ticket_id))  # at once: if the wait fails, the id is known
        run.phase = "waiting"
        ticket = await handle.wait_until_created(timeout=args.timeout, raise_on_failure=False)
        run.phase = "done"
        return _report_outcome(run, handle, ticket)


def _report_outcome(run: _Run, handle: TicketHandle, ticket: Ticket) -> int:
    run.ticket = ticket
    code = _exit_for_ticket(ticket)
    run.say(_status_line(ticket))
    if code == EXIT_FAILED:
        run.error(
            f"ticket {ticket.ticket_id} FAILED: Ripio could not register it; create a new one"
        )
    record = run.ticket_record(exit_code=code, error=None)
    record["elapsed_seconds"] = round(handle.elapsed, 3) if handle.elapsed is not None else None
    record["polls"] = handle.polls
    run.emit(record)
    return code


async def _cmd_get(run: _Run) -> int:
    args = run.args
    async with _make_client(args) as client:
        ticket = await client.get_ticket(args.ticket_id, timeout=args.timeout)
    run.ticket_id, run.ticket = ticket.ticket_id, ticket
    code = _exit_for_ticket(ticket)
    run.say(_status_line(ticket))
    run.emit(run.ticket_record(exit_code=code, error=None))
    return code


async def _cmd_wait(run: _Run) -> int:
    args = run.args
    async with _make_client(args) as client:
        handle = client.ticket_handle(args.ticket_id)
        run.ticket_id = handle.ticket_id
        run.phase = "waiting"
        try:
            ticket = await handle.wait_until_created(timeout=args.timeout, raise_on_failure=False)
        finally:
            run.ticket = handle.ticket
        run.phase = "done"
        return _report_outcome(run, handle, ticket)


# ---- demo


def _png_bytes(width: int = 32, height: int = 32) -> bytes:
    """A small, valid PNG (a colour gradient)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 8, y * 8, 160)) for x in range(width)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _pdf_bytes(text: str) -> bytes:
    """A small, valid one-page PDF showing ``text`` (ASCII)."""
    safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("ascii")
    content = b"BT /F1 16 Tf 36 72 Td (" + safe + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 420 144] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _write_demo_files(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    receipt = directory / "transfer-receipt.pdf"
    receipt.write_bytes(_pdf_bytes("Transfer receipt #48213 - 1,250.00 ARS"))
    screenshot = directory / "app-screenshot.png"
    screenshot.write_bytes(_png_bytes())
    return receipt, screenshot


class _DemoTicket:
    def __init__(
        self,
        customer_id: str,
        summary: str,
        description: str,
        files: Sequence[pathlib.Path] = (),
        *,
        expect_rejection: bool = False,
    ) -> None:
        self.customer_id = customer_id
        self.summary = summary
        self.description = description
        self.files = tuple(files)
        self.expect_rejection = expect_rejection
        self.handle: TicketHandle | None = None
        self.ticket: Ticket | None = None
        self.error: SkalaError | None = None
        self.attachments_received = 0

    @property
    def as_intended(self) -> bool:
        if self.expect_rejection:
            return isinstance(self.error, BadRequestError)
        return self.ticket is not None and self.ticket.status is TicketStatus.CREATED

    def record(self, prog: str) -> dict[str, Any]:
        handle, ticket = self.handle, self.ticket
        error: dict[str, Any] | None = None
        if self.error is not None:
            failure = _failure_for(self.error, None, prog)
            error = {"message": failure.message, "problems": list(failure.problems), **failure.info}
        elapsed = handle.elapsed if handle is not None else None
        return {
            "customer_id": self.customer_id,
            "summary": self.summary,
            "files": [f.name for f in self.files],
            "ticket_id": str(handle.ticket_id) if handle is not None else None,
            "status": ticket.status.value if ticket is not None else None,
            "issue_key": ticket.issue_key if ticket is not None else None,
            "elapsed_seconds": round(elapsed, 3) if elapsed is not None else None,
            "attachments": self.attachments_received,
            "expected_rejection": self.expect_rejection,
            "as_intended": self.as_intended,
            "error": error,
        }


async def _demo_one(client: SkalaClient, sandbox: SkalaSandbox, item: _DemoTicket) -> None:
    try:
        item.handle = await client.create_ticket(
            item.customer_id, item.summary, item.description, item.files
        )
        received = sandbox.tickets.get(str(item.handle.ticket_id))
        item.attachments_received = len(received.files) if received is not None else 0
        item.ticket = await item.handle.wait_until_created(timeout=60, raise_on_failure=False)
    except SkalaError as exc:
        item.error = exc


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    rows = [[terminal_safe(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return [fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


async def _cmd_demo(run: _Run) -> int:
    import pathlib
    import tempfile

    from .testing import SkalaSandbox

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="skala-demo-") as tmp:
        receipt, screenshot = _write_demo_files(pathlib.Path(tmp))
        async with SkalaSandbox(processing_delay=DEMO_DELAY) as sandbox:
            low, high = DEMO_DELAY
            run.say(
                f"Sandbox running in-process at {sandbox.url} "
                f"(tickets take {low:g} to {high:g} s to process)."
            )
            no_email = sandbox.add_customer(email=None)
            customer = sandbox.customer_id
            items = [
                _DemoTicket(
                    customer,
                    "Card top-up not credited",
                    "Top-up of 5,000 ARS on "
                    "the 3rd shows as done at the bank but not in the wallet.",
                ),
                _DemoTicket(
                    customer,
                    "Cannot verify identity",
                    "The selfie step of the "
                    "identity check fails with 'try again later' since Monday.",
                ),
                _DemoTicket(
                    customer,
                    "Withdrawal stuck in processing",
                    "A USDC withdrawal to an external wallet has been 'processing' for 2 days.",
                ),
                _DemoTicket(
                    customer,
                    "Wrong exchange rate applied",
                    "The BTC purchase at 10:42 used a rate 3% worse than the one quoted.",
                ),
                _DemoTicket(
                    customer,
                    "Transfer received but not shown",
                    "Receipt and a screenshot of the app attached.",
                    [receipt, screenshot],
                ),
                _DemoTicket(
                    no_email,
                    "Account locked",
                    "A customer with no email on file: Ripio cannot open a ticket for them.",
                    expect_rejection=True,
                ),
            ]
            run.say(f"Creating {len(items)} tickets concurrently and waiting for each outcome...")
            async with SkalaClient(
                client_id=sandbox.client_id,
                client_secret=sandbox.client_secret,
                base_url=sandbox.url,
                trust_env=False,  # the sandbox is in this process: no proxy in between
            ) as client:
                await asyncio.gather(*(_demo_one(client, sandbox, item) for item in items))
                gets = client.request_counts["get"]
    seconds = time.monotonic() - started

    if run.json:
        run.emit([item.record(run.prog) for item in items])
    else:
        rows = []
        for item in items:
            if item.handle is None:
                continue
            ticket = item.ticket
            elapsed = item.handle.elapsed
            rows.append(
                [
                    str(item.handle.ticket_id),
                    ticket.status.value if ticket is not None else "?",
                    (ticket.issue_key if ticket is not None else None) or "-",
                    f"{elapsed:.2f}" if elapsed is not None else "-",
                    str(item.attachments_received),
                ]
            )
        run.say()
        headers = ["ticket id", "status", "issue key", "seconds to outcome", "attachments"]
        for line in _table(headers, rows, right={3, 4}) if rows else []:
            run.say(line)
        run.say()
    for item in items:
        if item.expect_rejection and isinstance(item.error, BadRequestError):
            err = item.error
            run.say(
                f"Rejected as intended: customer {item.customer_id} has no email on file, and "
                "Ripio needs one to open a ticket for a customer;"
            )
            run.say(
                f"  the API answered HTTP {int(err.status)} [{err.code} {err.type}]: "
                f"{err.server_message or _one_line(str(err))}"
            )

    created = sum(1 for i in items if i.ticket is not None and i.ticket.status.value == "CREATED")
    failed = sum(1 for i in items if i.ticket is not None and i.ticket.status.value == "FAILED")
    rejected = sum(1 for i in items if i.expect_rejection and i.as_intended)
    run.say(
        f"Summary: {created} created, {failed} failed, {rejected} rejected as intended, "
        f"in {seconds:.1f} s with {gets} status polls."
    )

    code = EXIT_OK
    for item in items:
        if item.as_intended:
            continue
        if item.error is not None:
            failure = _failure_for(item.error, None, run.prog)
            run.error(f"demo ticket {item.summary!r}: {failure.message}", failure.problems)
            code = max(code, failure.code)
        else:
            status = item.ticket.status.value if item.ticket is not None else "no outcome"
            run.error(f"demo ticket {item.summary!r} ended {status}, not as intended")
            code = max(code, EXIT_FAILED)
    return code


# ---- sandbox


async def _cmd_sandbox(run: _Run) -> int:
    from .testing import SkalaSandbox

    args = run.args
    options: dict[str, Any] = {"host": args.host, "port": args.port}
    if args.client_id:
        options["client_id"] = args.client_id
    if args.client_secret:
        options["client_secret"] = args.client_secret
    if args.customer_id is not None:
        options["customer_id"] = args.customer_id
    if args.delay is not None:
        options["processing_delay"] = args.delay
    if args.outcome:
        options["outcome"] = args.outcome
    if args.disable_support_tickets:
        options["support_tickets_enabled"] = False
    try:
        sandbox = SkalaSandbox(**options)
    except ValueError as exc:
        raise _Failure(EXIT_USAGE, f"--customer-id: {exc}") from None
    # Opened now, written on stop: a path that cannot be written fails before serving.
    record = _open_record(args.record)
    stop = asyncio.Event()
    # Before the banner: once a caller has read the URL, SIGTERM stops us cleanly.
    undo_sigterm = _on_sigterm(stop.set)
    try:
        try:
            await sandbox.start()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise _Failure(
                EXIT_TRANSPORT, f"cannot listen on {args.host}:{args.port}: {reason}"
            ) from None
        no_email = sandbox.add_customer(email=None)
        if run.json:
            # The sandbox's own dev credentials: they open nothing but this fake.
            run.emit(
                {
                    "url": sandbox.url,
                    "client_id": sandbox.client_id,
                    "client_secret": sandbox.client_secret,
                    "customer_id": sandbox.customer_id,
                    "customer_without_email_id": no_email,
                }
            )
        else:
            run.say(f"Sandbox listening on {sandbox.url}")
            run.say(f"  SKALA_BASE_URL={sandbox.url}")
            run.say(f"  SKALA_CLIENT_ID={sandbox.client_id}")
            run.say(f"  SKALA_CLIENT_SECRET={sandbox.client_secret}")
            run.say(f"  customer id (has an email): {sandbox.customer_id}")
            run.say(f"  customer id (no email, creates answer 400): {no_email}")
            run.say("Press Ctrl-C to stop.")
        await stop.wait()  # SIGTERM; Ctrl-C arrives as KeyboardInterrupt via asyncio.run
    finally:
        undo_sigterm()
        try:
            await sandbox.close()
        finally:
            if record is not None:
                _write_record(record, sandbox, run)
    print("sandbox stopped", file=run.stderr, flush=True)
    return EXIT_OK


def _open_record(path: str | None) -> TextIO | None:
    """The ``--record`` file, opened for writing (``None`` without the option)."""
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise _Failure(EXIT_USAGE, f"--record: cannot write {path!r}: {exc.strerror}") from None


def _write_record(f: TextIO, sandbox: SkalaSandbox, run: _Run) -> None:
    """Write the sandbox's record to the ``--record`` file and close it."""
    data = sandbox.export_record()
    try:
        with f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.write("\n")
    except OSError as exc:
        run.error(f"--record: cannot write {f.name!r}: {exc.strerror or exc}")
        return
    count = len(data["requests"])
    print(
        terminal_safe(f"record of {count} request(s) written to {f.name}"),
        file=run.stderr,
        flush=True,
    )


def _on_sigterm(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on SIGTERM (where the loop supports it); returns the undo."""
    import signal

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, callback)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
        return lambda: None

    def undo() -> None:
        loop.remove_signal_handler(signal.SIGTERM)

    return undo


# ------------------------------------------------------------------------------ parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _delay(text: str) -> float | tuple[float, float]:
    """``SECONDS`` or ``MIN,MAX`` (a uniform random delay per ticket)."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SECONDS or MIN,MAX, got {text!r}") from None
    if len(values) == 1 and values[0] >= 0:
        return values[0]
    if len(values) == 2 and 0 <= values[0] <= values[1]:
        return (values[0], values[1])
    raise argparse.ArgumentTypeError(f"expected SECONDS or MIN,MAX with 0 <= MIN <= MAX: {text!r}")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0 to 65535, got {value}")
    return value


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """``--json`` and ``-v``, accepted before and after the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    parent.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (a list for demo), nothing else there",
        **default,
    )
    parent.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log the library's requests (DEBUG) to stderr; secrets are never logged",
        **default,
    )
    return parent


def _credential_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("credentials")
    group.add_argument("--client-id", metavar="ID", help="default: $SKALA_CLIENT_ID")
    group.add_argument(
        "--client-secret",
        metavar="SECRET",
        help="default: $SKALA_CLIENT_SECRET (prefer the environment: see the epilog)",
    )
    group.add_argument(
        "--token", metavar="TOKEN", help="a bearer token obtained elsewhere, instead of id/secret"
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default: $SKALA_BASE_URL, else Ripio's sandbox)",
    )
    group.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http:// base URL to a host that is not loopback",
    )
    group.add_argument(
        "--proxy",
        metavar="URL",
        help="HTTP(S) proxy for every request (default: $HTTPS_PROXY unless $NO_PROXY "
        "exempts the host)",
    )
    group.add_argument(
        "--ca-file",
        metavar="PEM",
        help="CA certificates (PEM) to trust instead of the system's, e.g. a private CA",
    )
    return parent


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser of ``skala-tickets``."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Create and follow Ripio Skala support tickets, or try the API locally.",
        epilog=EPILOG,
        formatter_class=formatter,
        parents=[_common_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common_options(suppress=True)
    creds = _credential_options()

    def add(
        name: str, summary: str, parents: list[argparse.ArgumentParser]
    ) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=EPILOG,
            formatter_class=formatter,
            parents=[common, *parents],
        )

    demo = add(
        "demo",
        "run a local sandbox, create a few tickets concurrently and show their outcomes "
        "(no credentials, no network beyond 127.0.0.1)",
        [],
    )
    demo.set_defaults(handler=_cmd_demo)

    create = add("create", "create a ticket on behalf of a customer", [creds])
    create.add_argument("--customer-id", required=True, metavar="ID", help="customer UUID")
    create.add_argument("--summary", required=True, metavar="TEXT", help="one line, <= 240 chars")
    text = create.add_mutually_exclusive_group(required=True)
    text.add_argument("--description", metavar="TEXT", help="<= 5000 characters")
    text.add_argument(
        "--description-file", metavar="PATH", help="read the description from a file ('-': stdin)"
    )
    create.add_argument(
        "--file",
        action="append",
        metavar="PATH",
        help="attach a file (repeat, up to 5: jpg jpeg png webp mp4 mov avi webm pdf)",
    )
    create.add_argument("--wait", action="store_true", help="wait for CREATED or FAILED")
    create.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help=f"with --wait: how long to wait for the outcome (default {DEFAULT_WAIT_TIMEOUT:g})",
    )
    create.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="upload progress bar on stderr (default: when stderr is a terminal and the "
        "attachments exceed 1 MiB)",
    )
    create.set_defaults(handler=_cmd_create)

    get = add("get", "show a ticket's status and issue key (one GET)", [creds])
    get.add_argument("ticket_id", metavar="TICKET_ID")
    get.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="overall time limit for the request, retries included",
    )
    get.set_defaults(handler=_cmd_get)

    wait = add("wait", "wait until a ticket is CREATED or FAILED", [creds])
    wait.add_argument("ticket_id", metavar="TICKET_ID")
    wait.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait (default {DEFAULT_WAIT_TIMEOUT:g})",
    )
    wait.set_defaults(handler=_cmd_wait)

    sandbox = add(
        "sandbox", "serve a local fake of the API until Ctrl-C (prints its URL first)", []
    )
    sandbox.description = (
        "serve a local fake of the API until Ctrl-C or SIGTERM (prints its URL first); "
        "-v logs each request it receives to stderr, --record FILE keeps them as JSON"
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    sandbox.add_argument("--port", type=_port, default=8000, help="default 8000; 0 picks one")
    sandbox.add_argument(
        "--delay",
        type=_delay,
        default=None,
        metavar="SECONDS",
        help="processing time of each ticket: SECONDS or MIN,MAX (default: the sandbox's)",
    )
    sandbox.add_argument(
        "--outcome", choices=["CREATED", "FAILED"], help="how tickets end (default CREATED)"
    )
    sandbox.add_argument(
        "--disable-support-tickets",
        action="store_true",
        help="answer 403 / 20061, as for an account without the feature",
    )
    sandbox.add_argument(
        "--customer-id",
        metavar="UUID",
        help="the id of its customer with an email (default: random); the same id across "
        "restarts keeps a CSV of tickets for it working",
    )
    sandbox.add_argument(
        "--record",
        metavar="FILE",
        help="on stop, write every request received (and the tickets) to FILE as JSON",
    )
    sandbox.add_argument("--client-id", metavar="ID", help="the fake's client id (default: random)")
    sandbox.add_argument(
        "--client-secret", metavar="SECRET", help="the fake's client secret (default: random)"
    )
    sandbox.set_defaults(handler=_cmd_sandbox)

    from . import _cli_bulk

    _cli_bulk.add_parser(add, creds)
    from . import _cli_webhooks

    _cli_webhooks.add_parser(add)
    return parser


# ------------------------------------------------------------------------------ main


class _SafeFormatter(logging.Formatter):
    """Log lines for a terminal: server text in a message cannot act on it."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record), newlines=True)


def log_to(stream: TextIO, name: str, level: int, fmt: str) -> Callable[[], None]:
    """Send logger ``name``'s records at ``level`` and above to ``stream``; returns undo."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_SafeFormatter(fmt))
    handler.setLevel(level)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    return undo


def _verbose_logging(enabled: bool, prog: str) -> Callable[[], None]:
    """Send ``skala_async`` DEBUG logs to stderr (without ``-v``: warnings only, one line
    each, as Python's last-resort handler would, but through :func:`terminal_safe`);
    returns the undo function."""
    from ._logging import env_handler_installed

    if env_handler_installed():
        # SKALA_LOG already logs to stderr at its level: -v only lowers it to DEBUG.
        if not enabled:
            return lambda: None
        logger = logging.getLogger("skala_async")
        previous = logger.level
        logger.setLevel(logging.DEBUG)
        return lambda: logger.setLevel(previous)
    if not enabled:
        return log_to(sys.stderr, "skala_async", logging.WARNING, f"{prog}: %(message)s")
    return log_to(
        sys.stderr, "skala_async", logging.DEBUG, "%(asctime)s %(name)s %(levelname)s %(message)s"
    )


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run ``skala-tickets`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    prog = prog or PROG
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    run = _Run(args, prog)
    handler: Callable[[_Run], Awaitable[int]] = args.handler
    undo_logging = _verbose_logging(args.verbose, prog)
    try:
        return asyncio.run(_guarded(handler, run))
    except KeyboardInterrupt:
        return run.interrupted()
    except BrokenPipeError:  # stdout closed early (| head): not worth a traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    finally:
        undo_logging()


async def _guarded(handler: Callable[[_Run], Awaitable[int]], run: _Run) -> int:
    try:
        return await handler(run)
    except _Failure as failure:
        return run.fail(failure)
    except SkalaError as exc:
        return run.fail(_failure_for(exc, run.ticket_id, run.prog))
    except (KeyboardInterrupt, asyncio.CancelledError, BrokenPipeError):
        raise
    except Exception as exc:
        log.debug("internal error", exc_info=True)
        return run.fail(
            _Failure(
                EXIT_INTERNAL,
                f"internal error ({type(exc).__name__}: {_one_line(str(exc))}); "
                "please report it (run with -v for details)",
                info={"exception": type(exc).__name__},
            )
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
