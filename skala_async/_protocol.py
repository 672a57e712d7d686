"""The pure core: validate drafts, describe requests, read responses. No I/O here.

Everything in this module is synchronous and deterministic, so it is tested without a
network (``tests/core/test_protocol.py``). ``_transport`` turns a :class:`Request` into bytes on
the wire and hands back a :class:`RawResponse`; the functions below decide what it means.

API facts are from the Ripio Ramps API pages (reference sections in brackets).
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

import attrs

from ._limits import (
    CREATE_PATH,
    MIB,
    SUPPORT_TICKETS_NOT_ENABLED_CODE,
    TICKET_PATH,
    TOKEN_PATH,
)
from ._validate import _LINE_BREAKS as _LINE_BREAKS  # re-exported: the old home
from ._validate import _with_clean_name
from ._validate import check_draft as check_draft
from ._validate import clean_filename as clean_filename
from ._validate import validate_draft as validate_draft
from ._wire import Operation, RawResponse, Request
from .errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    RateLimitedError,
    ServerError,
    SupportTicketsNotEnabledError,
    TicketNotFoundError,
    TransportError,
    UnexpectedResponseError,
    UploadAbortedError,
    ValidationError,
)
from .models import Ticket, TicketDraft, TicketStatus

#: Largest response body we read. Documented bodies are under 1 KiB; a hostile or broken
#: server cannot make the client buffer more than this.
MAX_RESPONSE_BYTES = 1 * MIB


#: The response header that carries the server's id of an exchange, unless told otherwise.
DEFAULT_REQUEST_ID_HEADER = "X-Request-Id"
_MAX_REQUEST_ID_CHARS = 128


def request_id_of(headers: Mapping[str, str], name: str = DEFAULT_REQUEST_ID_HEADER) -> str | None:
    """The request id a response carries in header ``name``, safe to print and log.

    A hostile or broken server could put line breaks (forged log lines), escape sequences
    or megabytes in it: anything but printable ASCII becomes ``?`` and the id is cut to
    128 characters.
    """
    value = headers.get(name)
    if not value:
        return None
    value = value.strip()
    if not value:
        return None
    if not (value.isascii() and value.isprintable()):
        value = "".join(c if " " <= c <= "~" else "?" for c in value)
    if len(value) > _MAX_REQUEST_ID_CHARS:
        value = value[:_MAX_REQUEST_ID_CHARS] + "…"
    return value


@attrs.frozen
class TokenInfo:
    """The token endpoint's answer (reference section 2)."""

    access_token: str = attrs.field(repr=False)
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - a scheme name
    scope: str | None = None


def create_request(draft: TicketDraft) -> Request:
    """The create-ticket request for a draft (validates it first)."""
    check_draft(draft)
    cid = draft.customer_id
    cid_text = str(cid if isinstance(cid, uuid.UUID) else uuid.UUID(cid.strip()))
    files = tuple(_with_clean_name(a) for a in draft.files)
    return Request(
        operation=Operation.CREATE,
        method="POST",
        path=CREATE_PATH,
        headers={"Accept": "application/json"},
        fields=(
            ("customerId", cid_text),
            ("summary", draft.summary),
            ("description", draft.description),
        ),
        files=files,
    )


def ticket_id_of(ticket_id: uuid.UUID | str) -> uuid.UUID:
    """Parse a ticket id, raising :class:`ValidationError` for anything not a UUID."""
    if isinstance(ticket_id, uuid.UUID):
        return ticket_id
    if isinstance(ticket_id, str):
        try:
            return uuid.UUID(ticket_id.strip())
        except ValueError:
            pass
    raise ValidationError([f"ticket_id: {ticket_id!r} is not a UUID"])


def get_request(ticket_id: uuid.UUID | str) -> Request:
    """The retrieve-ticket request (reference section 5)."""
    tid = ticket_id_of(ticket_id)
    return Request(
        operation=Operation.GET,
        method="GET",
        path=TICKET_PATH.format(ticket_id=tid),
        headers={"Accept": "application/json"},
        ticket_id=tid,
    )


def token_request(client_id: str, client_secret: str) -> Request:
    """The client-credentials token request (reference section 2)."""
    raw = f"{client_id}:{client_secret}".encode()
    return Request(
        operation=Operation.TOKEN,
        method="POST",
        path=TOKEN_PATH,
        headers={
            "Authorization": "Basic " + base64.b64encode(raw).decode("ascii"),
            "Accept": "application/json",
        },
        form=(("grant_type", "client_credentials"),),
        needs_auth=False,
    )


def form_body(request: Request) -> bytes:
    """The urlencoded body of a token request."""
    return urllib.parse.urlencode(request.form).encode("ascii")


def redact_url(url: str) -> str:
    """``url`` fit to show: any user-info (``user:password@``) replaced by ``***@``.

    Everything before the last ``@`` after the scheme goes, also when the text is not a
    well-formed URL (``svc:pw@host``, a raw ``/`` in a password): showing too little of a
    refused URL is harmless, showing a password is not.
    """
    if "@" not in url:
        return url
    scheme, sep, _ = url.partition("://")
    head = scheme + sep if sep and "@" not in scheme else ""
    return head + "***@" + url.rsplit("@", 1)[1]


# --------------------------------------------------------------------------- responses


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    Returns ``None`` when absent or unreadable, never a negative number.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def error_for(request: Request, response: RawResponse) -> ApiError:
    """The typed error for a non-2xx response (reference section 7)."""
    status = response.status
    data = _json_object(response.body)
    code = data.get("code") if data else None
    if not isinstance(code, int) or isinstance(code, bool):
        code = None
    etype = data.get("type") if data else None
    if not isinstance(etype, str):
        etype = None
    detail = data.get("detail") if data else None
    if isinstance(detail, str):
        detail = {"message": detail}
    if not isinstance(detail, dict):
        detail = None
    excerpt = (
        None
        if data is not None or request.operation is Operation.TOKEN
        else _excerpt_of(response.body)
    )
    kw: dict[str, Any] = {
        "code": code,
        "type": etype,
        "detail": detail,
        "headers": response.headers,
        "body_excerpt": excerpt,
        "method": request.method,
        "path": request.path,
        "request_id": response.request_id,
    }
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 403 and code == SUPPORT_TICKETS_NOT_ENABLED_CODE:
        return SupportTicketsNotEnabledError(status, **kw)
    if status in (401, 403):
        return AuthenticationError(status, **kw)
    if status == 404:
        return TicketNotFoundError(status, **kw)
    if status == 429:
        return RateLimitedError(status, retry_after=retry_after, **kw)
    if status >= 500:
        return ServerError(status, retry_after=retry_after, **kw)
    if status in (400, 413, 422):  # rejected input: too large, invalid
        return BadRequestError(status, **kw)
    if 400 <= status < 500:
        return ApiError(status, **kw)
    return UnexpectedResponseError(status, **kw)


def _excerpt_of(body: bytes, limit: int = 200) -> str:
    text = " ".join(body[:limit].decode("utf-8", "replace").split())
    return text + ("…" if len(body) > limit else "")


def _unexpected(request: Request, response: RawResponse, why: str) -> UnexpectedResponseError:
    message = f"HTTP {response.status} on {request.method} {request.path}: {why}"
    excerpt = None
    # A token endpoint's body may hold a token: never copy it into an error.
    if request.operation is not Operation.TOKEN:
        excerpt = _excerpt_of(response.body)
        message += f"; body starts {_excerpt_of(response.body, 120)!r}"
    return UnexpectedResponseError(
        response.status,
        headers=response.headers,
        body_excerpt=excerpt,
        method=request.method,
        path=request.path,
        message=message,
        request_id=response.request_id,
    )


def _structured(request: Request, response: RawResponse, cls: type[Any]) -> Any:
    if response.truncated:
        raise _unexpected(request, response, f"body larger than {MAX_RESPONSE_BYTES} bytes")
    data = _json_object(response.body)
    if data is None:
        raise _unexpected(request, response, "body is not a JSON object")
    # The converter (and cattrs) load on first use: most answers take the fast path.
    import cattrs

    from . import _convert

    try:
        return _convert.structure(data, cls)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            why = "; ".join(cattrs.transform_error(exc))
        else:
            why = str(exc)
    # Raised here, not in the handler: the converter's error (it holds the values it was
    # given, a token among them) must not ride along as __context__.
    raise _unexpected(request, response, f"unexpected JSON ({why})")


def _fast_ticket(response: RawResponse) -> Ticket | None:
    """The common, well-formed ticket body without the converter (it runs per poll);
    ``None`` sends anything unusual through the converter for a precise error."""
    if response.truncated:
        return None
    data = _json_object(response.body)
    if data is None:
        return None
    tid, status, key = data.get("ticketId"), data.get("status"), data.get("issueKey")
    if type(tid) is not str or type(status) is not str or not status:
        return None
    if key is not None and type(key) is not str:
        return None
    try:
        return Ticket(uuid.UUID(tid), TicketStatus(status), key)
    except ValueError:
        return None


def parse_ticket(request: Request, response: RawResponse) -> Ticket:
    """A :class:`Ticket` from a create (202) or retrieve (200) response, or raise.

    A create succeeds only with the documented ``202``: any other status, 2xx included, is
    an answer the API does not give to a create, and the caller cannot tell whether a
    ticket was made (:func:`create_refused` says which errors prove it was not). A
    retrieve accepts any 2xx, since the body is the same three fields.
    """
    if not 200 <= response.status < 300:
        raise error_for(request, response)
    creates = request.operation is Operation.CREATE
    if creates and response.status != 202 and not response.truncated:
        raise _unexpected(request, response, "a create is answered 202 Accepted")
    ticket = _fast_ticket(response) or _structured(request, response, Ticket)
    expected = request.ticket_id
    if request.operation is Operation.GET and expected is not None and ticket.ticket_id != expected:
        raise _unexpected(request, response, f"ticketId {ticket.ticket_id} is not {expected}")
    return ticket


def parse_token(request: Request, response: RawResponse) -> TokenInfo:
    """The access token from a token response, or raise."""
    if response.status != 200:
        raise error_for(request, response)
    info: TokenInfo = _structured(request, response, TokenInfo)
    if not (info.access_token.isprintable() and info.access_token and 0 < info.expires_in < 2**31):
        raise _unexpected(request, response, "empty or unprintable token, or bad expiresIn")
    return info


# --------------------------------------------------------------------------- retry rules


def create_refused(error: BaseException) -> bool:
    """Whether a failed create surely made no ticket (a refusal, not an ambiguous answer).

    Only these prove it: a connection that could not be opened; a body cut off on our side
    before it was complete (:class:`UploadAbortedError`: no server can process half a
    body); a 429; a 503 with ``Retry-After``; and a 4xx (other than 408) in the API's error
    shape, ``{"code": int, "type": str, ...}`` (reference section 7). Every other answer
    (a 1xx or 3xx as the final answer, a 2xx other than 202, 5xx, a 4xx page from a proxy,
    a body that cannot be read, a timeout or a reset after sending) may come after the
    ticket was stored, so it is ambiguous.
    """
    if isinstance(error, UploadAbortedError):
        return True
    if isinstance(error, TransportError):
        return not error.request_sent
    if create_may_be_resent(error):
        return True
    if isinstance(error, ApiError) and not isinstance(error, UnexpectedResponseError):
        status = int(error.status)
        return 400 <= status < 500 and status != 408 and _error_shaped(error)
    return False


def _error_shaped(error: ApiError) -> bool:
    return error.code is not None and error.type is not None


def create_may_be_resent(error: BaseException) -> bool:
    """Whether a failed create surely did not reach Ripio, so sending it again is safe.

    The API has no idempotency key (reference section 9), so only three cases qualify: a
    connection that could not be opened, a 429, and a 503 that carries ``Retry-After``
    (the server shedding load before doing any work).
    """
    if isinstance(error, TransportError):
        return error.retryable and not error.request_sent
    if isinstance(error, RateLimitedError):
        return True
    return isinstance(error, ServerError) and error.status == 503 and error.retry_after is not None


def read_may_be_resent(error: BaseException) -> bool:
    """Whether a GET or token request that failed this way is worth another try."""
    if isinstance(error, TransportError):
        return error.retryable
    if isinstance(error, (RateLimitedError, ServerError)):
        return True
    return isinstance(error, ApiError) and error.status == 408


def is_auth_failure(error: BaseException) -> bool:
    """401, or 403 with a code other than 20061: the token may be stale (reference §10.6)."""
    return isinstance(error, AuthenticationError)


def server_delay(error: BaseException) -> float | None:
    """The delay the server asked for with ``Retry-After``, if the error carries one."""
    if isinstance(error, (RateLimitedError, ServerError)):
        return error.retry_after
    return None
