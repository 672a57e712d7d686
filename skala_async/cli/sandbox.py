"""``sandbox``: serve a local fake of the API."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from skala_async.testing import SkalaSandbox
from ._common import (
    EXIT_OK,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    _delay,
    _Failure,
    _on_sigterm,
    _port,
    _Run,
    terminal_safe,
)


def _sandbox_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`SkalaSandbox` keyword arguments the options ask for."""
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
    return options


async def _cmd_sandbox(run: _Run) -> int:
    from skala_async.testing import SkalaSandbox

    args = run.args
    options = _sandbox_options(args)
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


def add_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the command(s) of this module on the ``skala-tickets`` parser."""
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
