"""``demo``: an in-process sandbox, a few tickets at once, a table of outcomes."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from skala_async.client import SkalaClient
from skala_async.errors import (
    BadRequestError,
    SkalaError,
)
from skala_async.models import Ticket, TicketStatus

if TYPE_CHECKING:
    import pathlib

    from skala_async._waiting import TicketHandle
    from skala_async.testing import SkalaSandbox
from ._common import DEMO_DELAY, EXIT_FAILED, EXIT_OK, _failure_for, _one_line, _Run, terminal_safe
from ._samples import _pdf_bytes, _png_bytes


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


def _demo_items(customer: str, no_email: str, files: Sequence[pathlib.Path]) -> list[_DemoTicket]:
    """The demo's tickets: four plain, one with attachments, one the API rejects."""
    return [
        _DemoTicket(
            customer,
            "Card top-up not credited",
            "Top-up of 5,000 ARS on the 3rd shows as done at the bank but not in the wallet.",
        ),
        _DemoTicket(
            customer,
            "Cannot verify identity",
            "The selfie step of the identity check fails with 'try again later' since Monday.",
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
            files,
        ),
        _DemoTicket(
            no_email,
            "Account locked",
            "A customer with no email on file: Ripio cannot open a ticket for them.",
            expect_rejection=True,
        ),
    ]


def _report_demo(run: _Run, items: Sequence[_DemoTicket], seconds: float, gets: int) -> None:
    """The table (or the JSON list), the rejection explained, and the summary line."""
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


async def _cmd_demo(run: _Run) -> int:
    import pathlib
    import tempfile

    from skala_async.testing import SkalaSandbox

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
            items = _demo_items(customer, no_email, [receipt, screenshot])
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

    _report_demo(run, items, seconds, gets)

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


def add_parser(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register the command(s) of this module on the ``skala-tickets`` parser."""
    demo = add(
        "demo",
        "run a local sandbox, create a few tickets concurrently and show their outcomes "
        "(no credentials, no network beyond 127.0.0.1)",
        [],
    )
    demo.set_defaults(handler=_cmd_demo)
