"""The notebook view of a sandbox (``_repr_html_``): settings, latest tickets and requests.

Everything is HTML-escaped; callers pass no secret (no client secret, no token).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from skala_async.testing.sandbox._values import (
    Delay,
    RecordedRequest,
    SandboxTicket,
    format_seconds,
)

__all__ = ["describe_delay", "render", "ticket_counts"]


def describe_delay(delay: Delay) -> str:
    if delay is None:
        return "none (use complete())"
    if isinstance(delay, tuple):
        return f"{format_seconds(delay[0])}–{format_seconds(delay[1])} s"
    return f"{format_seconds(delay)} s"


def ticket_counts(tickets: Sequence[SandboxTicket]) -> str:
    """``"12"``, or ``"12 (2 FAILED, 10 CREATED)"``: the tickets by status."""
    statuses: dict[str, int] = {}
    for ticket in tickets:
        statuses[ticket.status] = statuses.get(ticket.status, 0) + 1
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    return f"{len(tickets)}" + (f" ({counts})" if counts else "")


def render(
    settings: Sequence[tuple[str, str]],
    tickets: Sequence[SandboxTicket],
    requests: Sequence[RecordedRequest],
    recent: int,
) -> str:
    """The view: a settings table, then the last ``recent`` tickets and requests."""
    parts = [
        "<div class='skala-sandbox'><table><caption>SkalaSandbox</caption>",
        *(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in settings
        ),
        "</table>",
    ]
    shown_tickets = list(tickets)[-recent:]
    parts += _table(
        f"latest tickets ({len(shown_tickets)} of {len(tickets)})",
        ("ticket id", "status", "issue key", "summary", "files", "seconds to outcome"),
        [
            (
                t.ticket_id,
                t.status,
                t.issue_key or "—",
                _short(t.summary),
                str(len(t.files)),
                "—" if t.finished_at is None else f"{t.finished_at - t.created_at:.2f}",
            )
            for t in shown_tickets
        ],
    )
    shown = list(requests)[-recent:]
    parts += _table(
        f"latest requests ({len(shown)} of {len(requests)})",
        ("endpoint", "method", "path", "status", "fault", "summary", "files"),
        [
            (
                r.endpoint,
                r.method,
                _short(r.path),
                "dropped" if r.status is None else str(r.status),
                r.fault or "",
                # token requests carry credentials: show no field of theirs
                _short(r.fields.get("summary", "")) if r.endpoint == "create" else "",
                str(len(r.files)) if r.files else "",
            )
            for r in shown
        ],
    )
    parts.append("</div>")
    return "".join(parts)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(caption: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return []
    parts = [f"<table><caption>{html.escape(caption)}</caption><tr>"]
    parts.extend(f"<th>{html.escape(h)}</th>" for h in header)
    parts.append("</tr>")
    for row in rows:
        parts.append("<tr>")
        parts.extend(f"<td>{html.escape(cell)}</td>" for cell in row)
        parts.append("</tr>")
    parts.append("</table>")
    return parts
