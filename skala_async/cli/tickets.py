"""``create``, ``get`` and ``wait``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from skala_async._waiting import DEFAULT_WAIT_TIMEOUT
from skala_async.models import Ticket

if TYPE_CHECKING:
    from skala_async._waiting import TicketHandle
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    _exit_for_ticket,
    _make_client,
    _progress_bar,
    _read_description,
    _Run,
    _status_line,
)
from ._options import add_timeout


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


def add_parsers(
    add: Callable[..., argparse.ArgumentParser], creds: argparse.ArgumentParser
) -> None:
    """Register the command(s) of this module on the ``skala-tickets`` parser."""
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
    add_timeout(
        create,
        DEFAULT_WAIT_TIMEOUT,
        f"with --wait: how long to wait for the outcome (default {DEFAULT_WAIT_TIMEOUT:g})",
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
    add_timeout(
        get,
        None,
        "overall time limit for the request, retries included",
    )
    get.set_defaults(handler=_cmd_get)

    wait = add("wait", "wait until a ticket is CREATED or FAILED", [creds])
    wait.add_argument("ticket_id", metavar="TICKET_ID")
    add_timeout(
        wait,
        DEFAULT_WAIT_TIMEOUT,
        f"how long to wait (default {DEFAULT_WAIT_TIMEOUT:g})",
    )
    wait.set_defaults(handler=_cmd_wait)
