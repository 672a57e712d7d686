"""Notebook display: HTML reprs are well-formed, escape everything and show no secret."""

from __future__ import annotations

import uuid
from html.parser import HTMLParser

import pytest

import skala_async as skala
from skala_async.bulk import BulkOutcome, BulkReport, BulkResult
from skala_async.testing import SkalaSandbox, sandbox_client

TID = uuid.UUID("3c90c3cc-0d44-4b50-8888-8dd25736052a")
EVIL = "<script>alert('x')</script>&"
ESCAPED = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;"
#: The only tags our reprs use.
ALLOWED_TAGS = {"div", "table", "caption", "tr", "th", "td", "p"}


class _TagChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: set[str] = set()
        self.problems: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.problems.append(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def well_formed(html_text: str) -> str:
    """Assert ``html_text`` is balanced and uses only table markup; return its text."""
    checker = _TagChecker()
    checker.feed(html_text)
    checker.close()
    assert checker.problems == [], html_text
    assert checker.stack == [], f"unclosed {checker.stack}: {html_text}"
    assert checker.tags <= ALLOWED_TAGS, checker.tags - ALLOWED_TAGS
    return "".join(checker.text)


def test_checker_catches_broken_markup() -> None:
    with pytest.raises(AssertionError):
        well_formed("<table><tr><td>x</tr></table>")
    with pytest.raises(AssertionError):
        well_formed("<table><tr><td>x</td></tr>")
    with pytest.raises(AssertionError):
        well_formed(f"<table><tr><td>{EVIL}</td></tr></table>")


# ------------------------------------------------------------------------------- Ticket


def test_ticket_repr_is_concise_and_round_trips() -> None:
    t = skala.Ticket(TID, skala.TicketStatus.CREATED, "SUP-1234")
    assert repr(t) == (
        "Ticket(ticket_id=UUID('3c90c3cc-0d44-4b50-8888-8dd25736052a'), "
        "status='CREATED', issue_key='SUP-1234')"
    )
    assert eval(repr(t), {"Ticket": skala.Ticket, "UUID": uuid.UUID}) == t  # noqa: S307
    unknown = skala.Ticket(TID, skala.TicketStatus("ARCHIVED"))
    assert "status='ARCHIVED', issue_key=None" in repr(unknown)


def test_ticket_html_escapes_and_is_well_formed() -> None:
    html_text = skala.Ticket(TID, skala.TicketStatus(EVIL), EVIL)._repr_html_()
    text = well_formed(html_text)
    assert ESCAPED in html_text
    assert "<script" not in html_text
    assert EVIL in text  # shown as text, exactly
    assert str(TID) in text


# ------------------------------------------------------------------------- TicketHandle


async def test_handle_html_through_a_tickets_life(skala_sandbox: SkalaSandbox) -> None:
    async with sandbox_client(skala_sandbox) as client:
        handle = await client.create_ticket(skala_sandbox.customer_id, EVIL, "Description")
        assert repr(handle) == f"<TicketHandle {handle.ticket_id} PENDING>"
        pending = well_formed(handle._repr_html_())
        assert "PENDING" in pending
        assert "seconds to outcome" not in pending

        ticket = await handle.wait_until_created(timeout=10)
        assert repr(handle) == f"<TicketHandle {handle.ticket_id} CREATED {ticket.issue_key}>"
        done = well_formed(handle._repr_html_())
        assert "CREATED" in done
        assert str(ticket.issue_key) in done
        assert "seconds to outcome" in done
        assert "polls" in done
        assert well_formed(ticket._repr_html_())

        rebuilt = client.ticket_handle(handle.ticket_id)
        assert repr(rebuilt) == f"<TicketHandle {handle.ticket_id} unknown>"
        assert "unknown" in well_formed(rebuilt._repr_html_())

        for text in (repr(handle), handle._repr_html_(), repr(client)):
            assert skala_sandbox.client_secret not in text


def test_handle_html_escapes_an_odd_issue_key() -> None:
    handle = skala.TicketHandle(
        None,  # type: ignore[arg-type]  # the repr needs no client
        TID,
        skala.Ticket(TID, skala.TicketStatus.CREATED, EVIL),
    )
    html_text = handle._repr_html_()
    assert EVIL in well_formed(html_text)
    assert ESCAPED in html_text


# ------------------------------------------------------------------------------ sandbox


async def test_sandbox_html_shows_the_record_escaped_and_without_secrets() -> None:
    async with SkalaSandbox(processing_delay=None) as sandbox:
        async with sandbox_client(sandbox) as client:
            attachment = skala.Attachment.from_bytes(b"png", filename="screen.png")
            handle = await client.create_ticket(
                sandbox.customer_id, EVIL, "Description", files=[attachment]
            )
            sandbox.complete(str(handle.ticket_id))
            await handle.wait_until_created(timeout=10)  # one GET
            tokens = list(sandbox._tokens)
        html_text = sandbox._repr_html_()
        text = well_formed(html_text)
        assert "<script" not in html_text
        assert text.count(EVIL) == 2  # in the tickets table and in the requests table
        assert sandbox.url in text
        assert sandbox.client_id in text
        assert "SUP-1000" in text
        assert "latest requests (3 of 3)" in text  # token, create, get
        assert tokens
        for secret in [sandbox.client_secret, *tokens]:
            assert secret not in html_text
            assert secret not in repr(sandbox)
    assert "closed" in well_formed(sandbox._repr_html_())


async def test_sandbox_html_settings_and_limits() -> None:
    sandbox = SkalaSandbox(
        processing_delay=(0.1, 2),
        outcome=lambda ticket_id, fields: "FAILED",
        webhook_url="http://127.0.0.1:9/hook",
        webhook_secret="whsec-do-not-show",
    )
    text = well_formed(sandbox._repr_html_())  # before it runs
    assert "not running" in text
    assert "0.1–2 s" in text
    assert "a callable" in text
    assert "on, signed" in text
    assert "whsec-do-not-show" not in text
    sandbox.processing_delay = None
    sandbox.support_tickets_enabled = False
    text = well_formed(sandbox._repr_html_())
    assert "complete()" in text
    assert "no (20061)" in text

    async with SkalaSandbox(processing_delay=None) as sandbox:
        async with sandbox_client(sandbox) as client:
            for i in range(12):
                await client.create_ticket(sandbox.customer_id, f"Ticket {i}", "Text")
        html_text = sandbox._repr_html_()
        text = well_formed(html_text)
        assert "latest tickets (10 of 12)" in text
        assert "latest requests (10 of 13)" in text  # a token request and 12 creates
        assert "<td>Ticket 11</td>" in html_text
        assert "<td>Ticket 2</td>" in html_text
        assert "<td>Ticket 1</td>" not in html_text
        assert "12 PENDING" in text


def test_sync_sandbox_shows_the_same_html() -> None:
    from skala_async.sync import Sandbox

    with Sandbox() as sandbox:
        assert sandbox._repr_html_() == sandbox.sandbox._repr_html_()
        well_formed(sandbox._repr_html_())


# --------------------------------------------------------------------------- BulkReport


def test_bulk_report_html_shows_counts_and_failed_rows_escaped() -> None:
    report = BulkReport(
        (
            BulkResult(0, "k0", "row-1", BulkOutcome.CREATED, TID),
            BulkResult(1, "k1", EVIL, BulkOutcome.REJECTED, error=skala.ValidationError([EVIL])),
            BulkResult(2, "k2", "row-3", BulkOutcome.UNCERTAIN),
        )
    )
    html_text = report._repr_html_()
    text = well_formed(html_text)
    assert "<script" not in html_text
    assert EVIL in text
    assert "rejected" in text
    assert "uncertain" in text
    assert "row-3" in text
    assert "row-1" not in text  # created rows are counted, not listed
    assert repr(report) == ("<BulkReport 3 inputs: created=1, rejected=1, uncertain=1, failed=0>")
