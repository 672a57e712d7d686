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
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

from skala_async._version import __version__
from skala_async.errors import SkalaError

# Also re-exported (``X as X``): the names the ``bulk`` command and other modules import
# from here.
from ._common import (
    EPILOG,
    PROG,
    _common_options,
    _credential_options,
    _failure_for,
    _one_line,
    _verbose_logging,
)
from ._common import (
    EXIT_FAILED as EXIT_FAILED,
)
from ._common import (
    EXIT_INTERNAL as EXIT_INTERNAL,
)
from ._common import (
    EXIT_INTERRUPTED as EXIT_INTERRUPTED,
)
from ._common import (
    EXIT_OK as EXIT_OK,
)
from ._common import (
    EXIT_REFUSED as EXIT_REFUSED,
)
from ._common import (
    EXIT_TIMEOUT as EXIT_TIMEOUT,
)
from ._common import (
    EXIT_TRANSPORT as EXIT_TRANSPORT,
)
from ._common import (
    EXIT_USAGE as EXIT_USAGE,
)
from ._common import (
    ProgressBar as ProgressBar,
)
from ._common import (
    StatusLine as StatusLine,
)
from ._common import (
    _Failure as _Failure,
)
from ._common import (
    _make_client as _make_client,
)
from ._common import (
    _positive_seconds as _positive_seconds,
)
from ._common import (
    _Run as _Run,
)
from ._common import (
    bar as bar,
)
from ._common import (
    log_to as log_to,
)
from ._common import (
    terminal_safe as terminal_safe,
)

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

log = logging.getLogger("skala_async.cli")


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

    from . import bulk, demo, sandbox, tickets, webhooks

    demo.add_parser(add)
    tickets.add_parsers(add, creds)
    sandbox.add_parser(add)
    bulk.add_parser(add, creds)
    webhooks.add_parser(add)
    return parser


# ------------------------------------------------------------------------------ main


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
