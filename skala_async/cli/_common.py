"""What every command shares: exit codes, failures, one run's output, the client."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import ssl
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from skala_async._env import env_credentials
from skala_async._limits import MIB
from skala_async.client import SkalaClient
from skala_async.errors import (
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
from skala_async.models import Ticket, TicketStatus

# Shared with every command (and with ``bulk``) from here, under these names.
from ._options import _common_options as _common_options
from ._options import _credential_options as _credential_options
from ._options import _delay as _delay
from ._options import _port as _port
from ._options import _positive_seconds as _positive_seconds
from ._terminal import _verbose_logging as _verbose_logging
from ._terminal import log_to as log_to
from ._terminal import terminal_safe as terminal_safe

if TYPE_CHECKING:
    pass


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
        env_id, env_secret = env_credentials()
        client_id = args.client_id or env_id
        client_secret = args.client_secret or env_secret
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
