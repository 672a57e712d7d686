"""``skala-tickets webhooks``: receive and print verified webhooks, or sign a test payload.

::

    skala-tickets webhooks listen --port 8080 --secret S    # print each verified event
    skala-tickets webhooks listen --redis redis://127.0.0.1:6379/0   # ... and publish it
    skala-tickets webhooks sign event.json --secret S       # the signature header for a file

The secret defaults to ``$SKALA_WEBHOOK_SECRET`` (prefer it: command lines are visible to
other users of the machine). ``listen`` accepts ``--secret`` more than once, for a rotation.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from skala_async.models import SupportTicketEvent
from skala_async.webhooks import SIGNATURE_HEADER, SIGNATURE_HEADERS, WebhookReceiver, sign_payload

from ._common import (
    EXIT_OK,
    EXIT_TRANSPORT,
    EXIT_USAGE,
    _common_options,
    _Failure,
    _on_sigterm,
    _port,
    _positive_seconds,
    _Run,
    log_to,
)

SECRET_ENV = "SKALA_WEBHOOK_SECRET"  # noqa: S105 - the name of a variable, not a secret
REDIS_ENV = "SKALA_REDIS_URL"

WEBHOOKS_EPILOG = f"""\
secret: --secret, or ${SECRET_ENV} (prefer the environment: command lines are visible to
  other users). listen accepts --secret more than once during a rotation.

listen answers 401 for a missing or wrong signature, 400 for a malformed or stale event,
  413 for a body over 64 KiB, 200 otherwise (events of other families are acknowledged and
  not printed; a repeated (ticket id, status) is printed once).

listen --redis URL (or ${REDIS_ENV}; needs the [redis] extra) also publishes each verified
  event on the Redis bus: the waits of every process sharing it wake, and an event is
  printed once across all the listeners sharing it. Redis being away is not fatal.

try it:
  skala-tickets webhooks listen --port 8080 &
  curl -H "$(skala-tickets webhooks sign event.json)" -H 'Content-Type: application/json' \\
       --data-binary @event.json http://127.0.0.1:8080/

exit codes (webhooks):
  0    listen stopped with Ctrl-C or SIGTERM; sign printed the header
  2    usage error (no secret, unreadable file)
  4    listen cannot bind its address
"""


def _secrets(run: _Run) -> list[str]:

    given: list[str] = run.args.secret or []
    if not given:
        env = os.environ.get(SECRET_ENV)
        given = [env] if env else []
    if not given or not all(given):
        raise _Failure(EXIT_USAGE, f"a webhook secret is needed: --secret or ${SECRET_ENV}")
    return given


def _event_record(event: SupportTicketEvent) -> dict[str, Any]:
    return {
        "event_type": event.event_type,
        "issued_at": event.issued_at.isoformat(),
        "ticket_id": str(event.ticket_id),
        "status": event.status.value,
        "issue_key": event.ticket.issue_key,
        "extra": dict(event.extra),
    }


def _event_line(event: SupportTicketEvent) -> str:
    key = f" {event.ticket.issue_key}" if event.ticket.issue_key else ""
    stamp = event.issued_at.isoformat().replace("+00:00", "Z")
    return f"{stamp} {event.event_type} {event.ticket_id} {event.status.value}{key}"


async def _cmd_listen(run: _Run) -> int:
    from aiohttp import web

    args = run.args
    secrets = _secrets(run)

    def on_event(event: SupportTicketEvent) -> None:
        if run.json:
            run.emit(_event_record(event))
        else:
            run.say(_event_line(event))

    bus = _redis_bus(run)
    if bus is not None:
        await bus.start()
    receiver = WebhookReceiver(secrets, on_event, bus=bus, tolerance=args.tolerance)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    stop = asyncio.Event()
    undo_sigterm = _on_sigterm(stop.set)
    undo_logging = _refusals_to_stderr(run)
    try:
        try:
            await web.TCPSite(runner, args.host, args.port).start()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise _Failure(
                EXIT_TRANSPORT, f"cannot listen on {args.host}:{args.port}: {reason}"
            ) from None
        host, port = runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        url = f"http://{host}:{port}/"
        shared = bus.url if bus is not None else None
        if run.json:
            run.emit({"url": url, "redis": shared})
        else:
            run.say(f"Listening for webhooks on {url} (any path); Ctrl-C to stop")
            if shared is not None:
                run.say(f"Publishing each verified event on the Redis bus at {shared}")
        await stop.wait()  # SIGTERM; Ctrl-C arrives as KeyboardInterrupt via asyncio.run
    finally:
        undo_logging()
        undo_sigterm()
        await runner.cleanup()
        if bus is not None:
            await bus.close()
    print("webhook listener stopped", file=run.stderr, flush=True)
    return EXIT_OK


def _redis_bus(run: _Run) -> Any:
    """The ``RedisBus`` of ``--redis`` / ``$SKALA_REDIS_URL``, or ``None``."""

    url: str | None = run.args.redis or os.environ.get(REDIS_ENV) or None
    if url is None:
        return None
    try:
        from skala_async.redis import RedisBus
    except ImportError:
        raise _Failure(
            EXIT_USAGE, "--redis needs redis-py: pip install 'skala-async[redis]'"
        ) from None
    try:
        return RedisBus.from_url(url, prefix=run.args.redis_prefix)
    except ValueError as exc:
        raise _Failure(EXIT_USAGE, f"--redis: {exc}") from None


def _refusals_to_stderr(run: _Run) -> Callable[[], None]:
    """Show refused requests (and callback errors) on stderr, unless -v logs everything."""
    if run.args.verbose:
        return lambda: None

    logger = logging.getLogger("skala_async.webhooks")
    undo = log_to(run.stderr, logger.name, logging.INFO, f"{run.prog}: %(message)s")
    logger.propagate = False  # the warnings handler of every command would print them again

    def restore() -> None:
        logger.propagate = True
        undo()

    return restore


async def _cmd_sign(run: _Run) -> int:

    args = run.args
    secrets = _secrets(run)
    if len(secrets) > 1:
        raise _Failure(EXIT_USAGE, "sign takes one --secret")
    path: str = args.file
    try:
        body = _read_payload(path)
    except OSError as exc:
        raise _Failure(EXIT_USAGE, f"cannot read {path!r}: {exc.strerror or exc}") from None
    value = sign_payload(body, secrets[0])
    if run.json:
        run.emit({"header": args.header, "value": value})
    else:
        run.say(f"{args.header}: {value}")
    return EXIT_OK


def _read_payload(path: str) -> bytes:
    """The file's raw bytes (``-``: standard input), exactly as they will be sent."""
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def add_parser(
    add: Callable[[str, str, list[argparse.ArgumentParser]], argparse.ArgumentParser],
) -> None:
    """Register the ``webhooks`` subcommand group."""

    webhooks = add("webhooks", "receive Ripio's signed webhooks, or sign a test payload", [])
    webhooks.epilog = WEBHOOKS_EPILOG
    group = webhooks.add_subparsers(dest="webhooks_command", metavar="ACTION", required=True)
    formatter = argparse.RawDescriptionHelpFormatter
    common = [_common_options(suppress=True)]  # --json and -v also after the action

    listen = group.add_parser(
        "listen",
        help="serve a webhook endpoint and print each verified event (until Ctrl-C)",
        description="Serve a webhook endpoint on every path and print each verified event "
        "(one line, or one JSON object per line with --json).",
        epilog=WEBHOOKS_EPILOG,
        formatter_class=formatter,
        parents=common,
    )
    listen.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    listen.add_argument("--port", type=_port, default=8080, help="default 8080; 0 picks one")
    listen.add_argument(
        "--secret",
        action="append",
        metavar="SECRET",
        help=f"the shared secret (default: ${SECRET_ENV}); repeat during a rotation",
    )
    listen.add_argument(
        "--redis",
        metavar="URL",
        help=f"also publish each event on the Redis bus at URL (default: ${REDIS_ENV})",
    )
    listen.add_argument(
        "--redis-prefix",
        default="skala:",
        metavar="PREFIX",
        help="key and channel prefix on Redis (default skala:)",
    )
    listen.add_argument(
        "--tolerance",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="refuse events whose issueDatetime is further than this from now (default: no check)",
    )
    listen.set_defaults(handler=_cmd_listen)

    _add_sign(group, common)


def _add_sign(group: Any, common: list[argparse.ArgumentParser]) -> None:
    """Register ``webhooks sign``."""
    formatter = argparse.RawDescriptionHelpFormatter
    sign = group.add_parser(
        "sign",
        help="print the signature header for a file's raw bytes",
        description="Print the signature header Ripio would send for FILE's raw bytes.",
        epilog=WEBHOOKS_EPILOG,
        formatter_class=formatter,
        parents=common,
    )
    sign.add_argument("file", metavar="FILE", help="the payload ('-': stdin)")
    sign.add_argument(
        "--secret",
        action="append",
        metavar="SECRET",
        help=f"the shared secret (default: ${SECRET_ENV})",
    )
    sign.add_argument(
        "--header",
        choices=SIGNATURE_HEADERS,
        default=SIGNATURE_HEADER,
        help=f"header name to print (default {SIGNATURE_HEADER})",
    )
    sign.set_defaults(handler=_cmd_sign)
