"""What the sandbox received: one :class:`RecordedRequest` per request, in arrival order."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from types import EllipsisType
from typing import Any

import attrs
from aiohttp import web

from skala_async.testing.sandbox._values import (
    Endpoint,
    RecordedFile,
    RecordedRequest,
    SandboxTicket,
    WebhookDelivery,
)

__all__ = ["ANY", "Exchange", "Recorder", "request_line"]

ANY: EllipsisType = ...


@attrs.define
class Exchange:
    """What one request accumulates while it is handled; frozen into a RecordedRequest."""

    endpoint: Endpoint
    received_at: float
    request_id: str
    fields: dict[str, str] = attrs.field(factory=dict)
    files: list[RecordedFile] = attrs.field(factory=list)
    ticket_id: str | None = None
    fault: str | None = None


class Recorder:
    """Keeps the requests in arrival order: a slot is reserved when a request arrives and
    filled when it finishes, so a slow request keeps its place."""

    def __init__(self) -> None:
        self._slots: list[RecordedRequest | None] = []

    def reserve(self) -> int:
        """A slot for a request that just arrived."""
        self._slots.append(None)
        return len(self._slots) - 1

    def fill(self, index: int, request: web.Request, ex: Exchange, status: int | None) -> None:
        """Record a finished request in its slot (unless :meth:`clear` forgot the slot)."""
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        auth = request.headers.get("Authorization")
        scheme = auth.split(None, 1)[0] if auth and auth.strip() else None
        encoding = request.headers.get("Transfer-Encoding", "")
        record = RecordedRequest(
            endpoint=ex.endpoint,
            method=request.method,
            path=request.path,
            status=status,
            headers=headers,
            authorization_scheme=scheme,
            content_length=request.content_length,
            chunked="chunked" in encoding.lower(),
            fields=ex.fields,
            files=tuple(ex.files),
            ticket_id=ex.ticket_id,
            received_at=ex.received_at,
            fault=ex.fault,
            request_id=ex.request_id,
        )
        if index < len(self._slots):
            self._slots[index] = record

    def requests(self, endpoint: Endpoint | None = None) -> list[RecordedRequest]:
        """The finished requests (to ``endpoint``, if given), in arrival order."""
        return [r for r in self._slots if r is not None and endpoint in (None, r.endpoint)]

    def count(self, endpoint: Endpoint, status: int | EllipsisType | None = ANY) -> int:
        return sum(1 for r in self.requests(endpoint) if status is ANY or r.status == status)

    def clear(self) -> None:
        # Requests in flight keep their slot and are still recorded when they finish.
        self._slots = [None] * len(self._slots)


def export(
    url: str | None,
    requests: Iterable[RecordedRequest],
    tickets: Iterable[SandboxTicket],
    deliveries: Iterable[WebhookDelivery],
    wall_offset: float,
) -> dict[str, Any]:
    """The JSON-ready record :meth:`SkalaSandbox.export_record` returns."""

    def when(loop_time: float | None) -> str | None:
        if loop_time is None:
            return None
        moment = datetime.datetime.fromtimestamp(loop_time + wall_offset, datetime.timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    exported_requests = []
    for r in requests:
        item = attrs.asdict(r)
        item["received_at"] = when(r.received_at)
        exported_requests.append(item)
    exported_tickets = []
    for t in tickets:
        item = attrs.asdict(t)
        item["created_at"] = when(t.created_at)
        item["finished_at"] = when(t.finished_at)
        exported_tickets.append(item)
    return {
        "url": url,
        "requests": exported_requests,
        "tickets": exported_tickets,
        "webhook_deliveries": [d._asdict() for d in deliveries],
    }


def request_line(request: web.Request, ex: Exchange, status: int | None) -> str:
    """One line for the log: method, path, answer, and what a create or a GET carried."""
    answer = str(status) if status is not None else "dropped"
    parts = [request.method, request.path, answer, ex.endpoint]
    if ex.fault:
        parts.append(f"fault={ex.fault}")
    if ex.endpoint == "create":
        for name in ("customerId", "summary"):
            value = ex.fields.get(name)
            if value is not None:
                shown = value if len(value) <= 60 else value[:57] + "..."
                parts.append(f"{name}={shown!r}")
        if ex.files:
            names = ", ".join(f"{f.filename!r} {f.size} B" for f in ex.files)
            parts.append(f"files=[{names}]")
    if ex.ticket_id:
        parts.append(f"ticket={ex.ticket_id}")
    parts.append(ex.request_id)
    return " ".join(parts)
