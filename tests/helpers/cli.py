"""Shared pieces of the command-line tests: a sandbox on its own thread, argument lists,
a server command driven from a helper thread, signed webhook posts."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import queue
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skala_async.cli import main
from skala_async.testing import SkalaSandbox
from skala_async.webhooks import SIGNATURE_HEADER, sign_payload


@contextlib.contextmanager
def threaded_sandbox(**options: Any) -> Iterator[SkalaSandbox]:
    """A SkalaSandbox serving from its own thread and event loop."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sandbox", daemon=True)
    thread.start()
    sandbox = SkalaSandbox(**options)
    try:
        asyncio.run_coroutine_threadsafe(sandbox.start(), loop).result(10)
        yield sandbox
    finally:
        asyncio.run_coroutine_threadsafe(sandbox.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def creds(sb: SkalaSandbox) -> list[str]:
    return ["--base-url", sb.url, "--client-id", sb.client_id, "--client-secret", sb.client_secret]


def create_args(sb: SkalaSandbox, *extra: str, customer_id: str | None = None) -> list[str]:
    return [
        "create",
        *creds(sb),
        "--customer-id",
        customer_id or sb.customer_id,
        "--summary",
        "Card top-up not credited",
        "--description",
        "Top-up of 5,000 ARS not credited.",
        *extra,
    ]


def png(path: Path, size: int = 64) -> Path:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (size - 8))
    return path


WITH_CTRL_C = (
    # A background job of a non-interactive shell inherits SIGINT ignored: restore it.
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from skala_async.cli import main; sys.exit(main(sys.argv[1:]))"
)


class _Lines(io.TextIOBase):
    """A stdout that hands each complete line to a queue (for a helper thread to read)."""

    def __init__(self) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.written: list[str] = []
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.written.append(text)
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self.lines.put(line)
        return len(text)


def serve(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, drive: Callable[[str, queue.Queue[str]], None]
) -> tuple[int, list[str]]:
    """Run the server command ``argv`` in this (the main) thread; ``drive(first_line, lines)``
    runs in a helper thread once the server printed its first line, then SIGTERM stops it.
    Returns the exit code and every line the command printed on stdout."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can be installed in the main thread only")
    out = _Lines()
    failures: list[BaseException] = []

    def helper() -> None:
        try:
            first = out.lines.get(timeout=20)
        except queue.Empty:
            failures.append(AssertionError("the server printed nothing"))
            return  # no SIGTERM: the server never got to install its handler
        try:
            drive(first, out.lines)
        except BaseException as exc:
            failures.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=helper, name="drive-server")
    thread.start()
    with monkeypatch.context() as m:
        m.setattr(sys, "stdout", out)
        code = main(argv)
    thread.join(20)
    if failures:
        raise failures[0]
    return code, "".join(out.written).splitlines()


def signed_event(ticket_id: str, status: str, issue_key: str | None) -> bytes:
    return json.dumps(
        {
            "eventType": f"SUPPORT_TICKET.{status}",
            "issueDatetime": "2025-03-04T05:06:07.890Z",
            "supportTicket": {"ticketId": ticket_id, "status": status, "issueKey": issue_key},
        },
        separators=(",", ":"),
    ).encode()


def post_event(url: str, body: bytes, secret: str) -> int:
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_payload(body, secret)}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
