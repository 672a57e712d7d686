"""OpenTelemetry spans (the optional ``[otel]`` extra).

Imported only when a client is made with ``tracing=``; without it nothing here (and
nothing of ``opentelemetry``) is loaded, and the client's code paths test one ``None``.

Spans:

``skala.token``, ``skala.create_ticket``, ``skala.get_ticket``
    one per call (retries included); ``skala.create_ticket`` carries the attachments'
    count and bytes and the outcome (``accepted``, ``invalid``, ``rejected``,
    ``uncertain``, ``failed``).
``POST`` / ``GET`` (kind ``CLIENT``)
    one per HTTP attempt, a child of the above, with the HTTP semantic-convention
    attributes; its context is propagated in the request headers (``traceparent``).
``skala.wait``
    one per :meth:`TicketHandle.wait_until_created`: GETs made and how it ended.
``skala.webhook``
    one per webhook request with a body: verified or why not.
``skala.bulk`` and ``skala.bulk.input``
    one per bulk run, and a child per input that ends when the input's result is known.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._version import __version__
from ._wire import Operation

if TYPE_CHECKING:
    from ._wire import RawResponse, Request
    from .errors import SkalaError

__all__ = ["Tracing"]

Span = trace.Span

_URL_TEMPLATES = {
    Operation.TOKEN: "/oauth2/token/",
    Operation.CREATE: "/api/v1/supportTickets/",
    Operation.GET: "/api/v1/supportTickets/{ticketId}/",
}
#: Span names of calls that are one request kind (a create's span also covers validation).
_OPERATIONS = {Operation.TOKEN: "skala.token", Operation.GET: "skala.get_ticket"}


class Tracing:
    """Makes this library's spans with one tracer (from a provider, or the global one)."""

    def __init__(self, provider: Any = None) -> None:
        if provider is None or provider is True:
            self._tracer = trace.get_tracer("skala_async", __version__)
        else:
            if not hasattr(provider, "get_tracer"):
                raise TypeError(
                    "tracing= takes True (the global tracer provider) or an OpenTelemetry "
                    f"TracerProvider, got {type(provider).__name__}"
                )
            self._tracer = provider.get_tracer("skala_async", __version__)

    # -- calls -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def operation(self, request: Request) -> Iterator[Span]:
        """The span of a token or GET call (retries included), made current."""
        attributes: dict[str, Any] = {}
        if request.ticket_id is not None:
            attributes["skala.ticket_id"] = str(request.ticket_id)
        with self._tracer.start_as_current_span(
            _OPERATIONS[request.operation], attributes=attributes, record_exception=False
        ) as span:
            yield span

    @contextlib.contextmanager
    def create(self) -> Iterator[Span]:
        """The span of a create call, validation included (attributes come later)."""
        with self._tracer.start_as_current_span(
            "skala.create_ticket", record_exception=False
        ) as span:
            yield span

    @staticmethod
    def describe_create(span: Span, request: Request) -> None:
        span.set_attribute("skala.attachments.count", len(request.files))
        span.set_attribute("skala.attachments.bytes", request.body_size)

    @staticmethod
    def ended(span: Span, outcome: str, error: BaseException | None = None) -> None:
        """Record how a call ended; an error also marks the span as failed."""
        span.set_attribute("skala.outcome", outcome)
        if error is not None:
            span.set_attribute("error.type", type(error).__name__)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))

    @contextlib.contextmanager
    def attempt(
        self, request: Request, base_url: str, attempt: int, headers: dict[str, str]
    ) -> Iterator[Span]:
        """The ``CLIENT`` span of one HTTP attempt; ``headers`` get its trace context."""
        url = base_url + request.path
        parts = urllib.parse.urlsplit(url)
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            "url.full": url,
            "url.scheme": parts.scheme,
            "url.template": _URL_TEMPLATES[request.operation],
        }
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        with self._tracer.start_as_current_span(
            request.method, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False
        ) as span:
            propagate.inject(headers)
            yield span

    @staticmethod
    def answered(span: Span, response: RawResponse) -> None:
        span.set_attribute("http.response.status_code", response.status)
        if response.request_id:
            span.set_attribute("skala.request_id", response.request_id)
        if response.status >= 400:
            span.set_attribute("error.type", str(response.status))
            span.set_status(Status(StatusCode.ERROR))

    @staticmethod
    def attempt_failed(span: Span, error: SkalaError) -> None:
        """No answer came (a transport failure): name the failure."""
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))

    # -- waits, webhooks, bulk ---------------------------------------------------------------

    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Span:
        """A span that is not made current (end it with ``span.end()``)."""
        return self._tracer.start_span(name, attributes=attributes)

    @contextlib.contextmanager
    def current(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
        """A span made current for the block."""
        with self._tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False
        ) as span:
            yield span

    @staticmethod
    def use(span: Span) -> contextlib.AbstractContextManager[Span]:
        """Make ``span`` current for a block without ending it."""
        return trace.use_span(span, end_on_exit=False)
