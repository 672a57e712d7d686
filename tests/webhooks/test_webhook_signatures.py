"""Webhook signatures, parsing and freshness: the pure functions, no server."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import skala_async as skala
from skala_async.webhooks import (
    SIGNATURE_HEADER,
    InvalidSignatureError,
    InvalidWebhookError,
    StaleWebhookError,
    WebhookReceiver,
    check_freshness,
    parse_event,
    sign_payload,
    verify_and_parse,
    verify_signature,
)
from tests.helpers.webhooks import (
    SECRET,
    TICKET_ID,
    UTC,
    documented_signature,
    event_dict,
    iso,
    signed,
    wire,
)


def test_documented_signature_verifies() -> None:
    body = wire(event_dict())
    verify_signature(body, {SIGNATURE_HEADER: documented_signature(body)}, SECRET)
    assert sign_payload(body, SECRET) == documented_signature(body)
    assert sign_payload(body, SECRET.encode()) == documented_signature(body)
    verify_signature(bytearray(body), [(SIGNATURE_HEADER, sign_payload(body, SECRET))], SECRET)


def test_every_single_byte_flip_is_rejected() -> None:
    body = wire(event_dict())
    headers = {SIGNATURE_HEADER: documented_signature(body)}
    for position in range(len(body)):
        tampered = bytearray(body)
        tampered[position] ^= 0x01
        with pytest.raises(InvalidSignatureError, match="does not match"):
            verify_signature(bytes(tampered), headers, SECRET)
    with pytest.raises(InvalidSignatureError):
        verify_signature(body + b" ", headers, SECRET)
    with pytest.raises(InvalidSignatureError):
        verify_signature(body[:-1], headers, SECRET)


def test_every_signature_character_matters() -> None:
    body = wire(event_dict())
    good = documented_signature(body)
    for position in range(len("sha256="), len(good)):
        flipped = "0" if good[position] != "0" else "1"
        bad = good[:position] + flipped + good[position + 1 :]
        with pytest.raises(InvalidSignatureError):
            verify_signature(body, {SIGNATURE_HEADER: bad}, SECRET)


def test_wrong_secret_missing_and_malformed_headers() -> None:
    body = wire(event_dict())
    with pytest.raises(InvalidSignatureError, match="does not match"):
        verify_signature(body, signed(body, "another-secret"), SECRET)
    with pytest.raises(InvalidSignatureError, match="missing"):
        verify_signature(body, {"Content-Type": "application/json"}, SECRET)
    with pytest.raises(InvalidSignatureError, match="missing"):
        verify_signature(body, {"X-Signature": documented_signature(body)}, SECRET)
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    for value in ("", digest, "sha1=" + digest, "sha256:" + digest, "sha256=ñ" + digest[1:]):
        with pytest.raises(InvalidSignatureError):
            verify_signature(body, {SIGNATURE_HEADER: value}, SECRET)


@pytest.mark.parametrize(
    "name",
    [
        "Http-X-Wh-Signature-256",
        "HTTP-X-WH-SIGNATURE-256",
        "http-x-wh-signature-256",
        "X-Wh-Signature-256",
        "x-wh-signature-256",
        "X-WH-SIGNATURE-256",
    ],
)
def test_both_header_names_in_any_case(name: str) -> None:
    body = wire(event_dict())
    verify_signature(body, {name: documented_signature(body)}, SECRET)


def test_header_value_variants() -> None:
    body = wire(event_dict())
    good = documented_signature(body)
    verify_signature(body, {SIGNATURE_HEADER: f"  {good.upper()}  "}, SECRET)
    # A proxy folded two headers into one, or sent both names: any valid one is enough.
    verify_signature(body, {SIGNATURE_HEADER: f"sha256={'0' * 64}, {good}"}, SECRET)
    verify_signature(
        body, [("X-Wh-Signature-256", "sha256=" + "0" * 64), (SIGNATURE_HEADER, good)], SECRET
    )


def test_rotation_accepts_any_listed_secret() -> None:
    body = wire(event_dict())
    old, new = "old-secret", "new-secret"
    for secret in (old, new):
        verify_signature(body, signed(body, secret), [new, old])
        verify_signature(body, signed(body, secret), (new.encode(), old))
    with pytest.raises(InvalidSignatureError):
        verify_signature(body, signed(body, "retired"), [new, old])


def test_bad_arguments_are_caller_errors() -> None:
    body = wire(event_dict())
    headers = signed(body)
    with pytest.raises(TypeError, match="raw request body as bytes"):
        verify_signature(body.decode(), headers, SECRET)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        verify_signature(body, headers, "")
    with pytest.raises(ValueError, match="no webhook secret"):
        verify_signature(body, headers, [])
    with pytest.raises(TypeError, match="str or bytes"):
        verify_signature(body, headers, [SECRET, 42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="str or bytes"):
        verify_signature(body, headers, 42)  # type: ignore[arg-type]


def test_non_ascii_payload_verifies_over_raw_bytes() -> None:
    event = event_dict(customerName="Ñandú Muñoz")
    body = wire(event)
    assert b"\\u00d1and\\u00fa Mu\\u00f1oz" in body  # ASCII-escaped, as Ripio sends it
    parsed = verify_and_parse(body, signed(body), SECRET)
    assert parsed.extra == {"supportTicket": {"customerName": "Ñandú Muñoz"}}
    # The same event as raw UTF-8 is different bytes: it verifies only with its own signature.
    utf8 = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    assert utf8 != body
    with pytest.raises(InvalidSignatureError):
        verify_signature(utf8, signed(body), SECRET)
    assert verify_and_parse(utf8, signed(utf8), SECRET) == parsed


def test_secret_never_in_errors_or_repr() -> None:
    body = wire(event_dict())
    messages = []
    for headers in ({}, signed(body, "other"), {SIGNATURE_HEADER: "junk"}):
        with pytest.raises(InvalidSignatureError) as info:
            verify_signature(body, headers, SECRET)
        messages.append(str(info.value))
    receiver = WebhookReceiver([SECRET, "second-secret"], tolerance=60)
    messages.append(repr(receiver))
    text = "\n".join(messages)
    assert SECRET not in text
    assert "second-secret" not in text
    assert documented_signature(body) not in text
    assert "2 secrets" in repr(receiver)


def test_package_exports_load_the_module_lazily() -> None:
    from skala_async import webhooks

    assert skala.WebhookError is webhooks.WebhookError
    assert skala.webhooks is webhooks
    assert issubclass(skala.InvalidSignatureError, skala.SkalaError)
    assert {"WebhookReceiver", "StaleWebhookError"} <= set(dir(skala))
    with pytest.raises(AttributeError):
        _ = skala.NoSuchName  # type: ignore[attr-defined]
    code = "import sys, skala_async; print('skala_async.webhooks' in sys.modules)"
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("module", ["skala_async.webhooks._verify", "skala_async.webhooks"])
def test_verification_imports_no_aiohttp(module: str) -> None:
    # The top-level package imports the client (and so aiohttp) today: stand an empty
    # package in for it, so that only what the webhook modules import themselves counts.
    package = Path(skala.__file__).parent
    code = (
        "import sys, types; "
        "p = types.ModuleType('skala_async'); "
        f"p.__path__ = [{str(package)!r}]; "
        "sys.modules['skala_async'] = p; "
        f"import {module} as m; "
        "m.sign_payload(b'{}', 'k'); "
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'aiohttp'))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ parsing


def test_parse_event_fields() -> None:
    event = parse_event(wire(event_dict(issued="2026-06-26T14:30:00.000Z")))
    assert event.event_type == "SUPPORT_TICKET.CREATED"
    assert event.issued_at == datetime.datetime(2026, 6, 26, 14, 30, tzinfo=UTC)
    assert event.issued_at.tzinfo is not None
    assert event.ticket == skala.Ticket(
        uuid.UUID(TICKET_ID), skala.TicketStatus.CREATED, "SUP-1234"
    )
    assert event.status is skala.TicketStatus.CREATED
    assert event.ticket_id == uuid.UUID(TICKET_ID)
    assert event.extra == {}
    with pytest.raises(AttributeError):
        event.event_type = "x"  # type: ignore[misc]
    body = wire(event_dict(status="FAILED", issue_key=None))  # one timestamp for both
    failed = parse_event(body)
    assert failed.status is skala.TicketStatus.FAILED
    assert failed.ticket.issue_key is None
    assert hash(failed) == hash(parse_event(body))


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-06-26T14:30:05Z", datetime.datetime(2026, 6, 26, 14, 30, 5, tzinfo=UTC)),
        ("2026-06-26T14:30:05+00:00", datetime.datetime(2026, 6, 26, 14, 30, 5, tzinfo=UTC)),
        ("2026-06-26T14:30:05.1Z", datetime.datetime(2026, 6, 26, 14, 30, 5, 100000, tzinfo=UTC)),
        ("2026-06-26T14:30:05.123Z", datetime.datetime(2026, 6, 26, 14, 30, 5, 123000, tzinfo=UTC)),
        (
            "2026-06-26T14:30:05.123456+00:00",
            datetime.datetime(2026, 6, 26, 14, 30, 5, 123456, tzinfo=UTC),
        ),
        ("2024-04-25T18:22:37Z", datetime.datetime(2024, 4, 25, 18, 22, 37, tzinfo=UTC)),
    ],
)
def test_issue_datetime_formats(stamp: str, expected: datetime.datetime) -> None:
    assert parse_event(wire(event_dict(issued=stamp))).issued_at == expected


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-06-26T14:30:05",  # no zone
        "2026-06-26T14:30:05.1234567Z",  # 7 digits
        "2026-06-26T14:30:05.Z",
        "2026-06-26T14:30:05+01:00",  # not UTC
        "2026-06-26 14:30:05Z",
        "2026-13-26T14:30:05Z",  # month 13
        "2026-02-30T14:30:05Z",
        "2026-06-26T14:30:05Z ",
        "٢٠٢٦-06-26T14:30:05Z",  # non-ASCII digits
        "",
    ],
)
def test_bad_issue_datetime(stamp: str) -> None:
    with pytest.raises(InvalidWebhookError, match="issueDatetime"):
        parse_event(wire(event_dict(issued=stamp)))


def test_unknown_fields_are_kept() -> None:
    data = event_dict(customerId="3c90c3cc-0d44-4b50-8888-8dd25736052a")
    data["deliveryId"] = "d-1"
    event = parse_event(wire(data))
    assert event.extra == {
        "deliveryId": "d-1",
        "supportTicket": {"customerId": "3c90c3cc-0d44-4b50-8888-8dd25736052a"},
    }


def test_status_from_event_type_and_unknown_statuses() -> None:
    data = event_dict()
    del data["supportTicket"]["status"]
    assert parse_event(wire(data)).status is skala.TicketStatus.CREATED
    archived = parse_event(wire(event_dict(status="ARCHIVED", issue_key=None)))
    assert archived.status.value == "ARCHIVED"
    assert not archived.status.known
    # A future event type with a supportTicket object is still a ticket event.
    data = event_dict()
    data["eventType"] = "SUPPORT_TICKETS_V2.UPDATED"
    assert parse_event(wire(data)).status is skala.TicketStatus.CREATED


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b"[]", "not an object"),
        (b'"x"', "not an object"),
        (b"{}", "eventType"),
        (b'{"eventType":5}', "eventType"),
        (b'{"eventType":"SUPPORT_TICKET.CREATED"}', "without a supportTicket"),
        (b'{"eventType":"ACCOUNT.CLOSED","account":{}}', "another Ripio family"),
        (
            b'{"eventType":"SUPPORT_TICKET.","supportTicket":{},'
            b'"issueDatetime":"2026-06-26T14:30:00Z"}',
            "names no status",
        ),
        (
            b'{"eventType":"SUPPORT_TICKET.CREATED","supportTicket":[],'
            b'"issueDatetime":"2026-06-26T14:30:00Z"}',
            "not an object",
        ),
        (
            b'{"eventType":"SUPPORT_TICKET.CREATED","supportTicket":{"ticketId":"x"},'
            b'"issueDatetime":"2026-06-26T14:30:00Z"}',
            "not a ticket",
        ),
        (
            b'{"eventType":"SUPPORT_TICKET.CREATED","supportTicket":{"status":"CREATED"},'
            b'"issueDatetime":"2026-06-26T14:30:00Z"}',
            "not a ticket",
        ),
        (b'{"eventType":"SUPPORT_TICKET.CREATED","supportTicket":{}}', "issueDatetime"),
        (b"[" * 100000, "not valid JSON"),
    ],
)
def test_malformed_bodies(body: bytes, match: str) -> None:
    with pytest.raises(InvalidWebhookError, match=match):
        parse_event(body)


def test_contradicting_status_and_wrong_types() -> None:
    data = event_dict()
    data["supportTicket"]["status"] = "FAILED"
    with pytest.raises(InvalidWebhookError, match="contradicts") as info:
        parse_event(wire(data))
    assert info.value.event_type == "SUPPORT_TICKET.CREATED"
    data = event_dict()
    data["supportTicket"]["issueKey"] = 1234
    with pytest.raises(InvalidWebhookError, match=r"@ supportTicket\.issueKey"):
        parse_event(wire(data))
    with pytest.raises(TypeError):
        parse_event(json.dumps(event_dict()))  # type: ignore[arg-type]


def test_other_families_name_their_event_type() -> None:
    body = wire({"eventType": "ACCOUNT.CLOSED", "issueDatetime": "2026-06-26T14:30:00Z"})
    with pytest.raises(InvalidWebhookError) as info:
        parse_event(body)
    assert info.value.event_type == "ACCOUNT.CLOSED"


# ------------------------------------------------------------------------------ freshness


def test_freshness_window_both_directions() -> None:
    now = datetime.datetime(2026, 6, 26, 14, 30, tzinfo=UTC)
    for offset in (-299, 0, 299):
        issued = iso(now + datetime.timedelta(seconds=offset))
        parse_event(wire(event_dict(issued=issued)), tolerance=300, now=now)
    stale = iso(now - datetime.timedelta(seconds=301))
    with pytest.raises(StaleWebhookError, match="ago") as info:
        parse_event(wire(event_dict(issued=stale)), tolerance=300, now=now)
    assert info.value.age == pytest.approx(301)
    assert info.value.tolerance == 300
    future = iso(now + datetime.timedelta(seconds=301))
    with pytest.raises(StaleWebhookError, match="future") as info:
        parse_event(
            wire(event_dict(issued=future)), tolerance=datetime.timedelta(minutes=5), now=now
        )
    assert info.value.age == pytest.approx(-301)
    # Without a window, any time is accepted.
    parse_event(wire(event_dict(issued="2001-01-01T00:00:00Z")))
    # Against the real clock.
    check_freshness(datetime.datetime.now(UTC), 5)
    with pytest.raises(StaleWebhookError):
        check_freshness(datetime.datetime.now(UTC) - datetime.timedelta(seconds=10), 5)


@pytest.mark.parametrize(
    "tolerance", [0, -1, 0.0, float("nan"), float("inf"), datetime.timedelta()]
)
def test_non_positive_window_is_an_error(tolerance: Any) -> None:
    body = wire(event_dict())
    with pytest.raises(ValueError, match="positive"):
        parse_event(body, tolerance=tolerance)
    with pytest.raises(ValueError, match="positive"):
        check_freshness(datetime.datetime.now(UTC), tolerance)
    with pytest.raises(ValueError, match="positive"):
        WebhookReceiver(SECRET, tolerance=tolerance)


def test_window_type_and_naive_now() -> None:
    with pytest.raises(TypeError):
        check_freshness(datetime.datetime.now(UTC), "60")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        check_freshness(datetime.datetime.now(UTC), True)
    with pytest.raises(ValueError, match="aware"):
        check_freshness(datetime.datetime.now(UTC), 60, now=datetime.datetime.now())


def test_receiver_arguments() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        WebhookReceiver(SECRET, max_body_bytes=0)
    with pytest.raises(ValueError, match="dedupe_size"):
        WebhookReceiver(SECRET, dedupe_size=-1)
    with pytest.raises(TypeError, match="callable"):
        WebhookReceiver(SECRET, "not callable")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        WebhookReceiver(b"")


# ------------------------------------------------------------------------------ aiohttp handler
