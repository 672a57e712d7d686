"""The sandbox's vocabulary: error codes, endpoint names, and the records it keeps.

Pure data, no I/O: every other module of the sandbox imports from here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Literal, NamedTuple, TypeAlias

import attrs

from skala_async._limits import CREATE_PATH, TOKEN_PATH

# --------------------------------------------------------------------------------------------
# Error codes. Only 20061 is documented; the rest are the sandbox's own choices (B2B-style).

#: 400: a create request breaks a documented limit (``detail.errors`` lists every problem).
VALIDATION_ERROR_CODE = 20000
#: 400: the body could not be parsed (bad multipart, bad form encoding).
PARSE_ERROR_CODE = 20001
#: 415: create was not sent as ``multipart/form-data``.
UNSUPPORTED_MEDIA_TYPE_CODE = 20002
#: 405: a known path with the wrong method.
METHOD_NOT_ALLOWED_CODE = 20005
#: 400: the ``customerId`` of a create is not a known customer.
CUSTOMER_NOT_FOUND_CODE = 20062
#: 400: the customer has no email address on file.
CUSTOMER_WITHOUT_EMAIL_CODE = 20063
#: 404: retrieve of an unknown (or malformed) ticket id.
TICKET_NOT_FOUND_CODE = 20064
#: 404: the customer has been deactivated.
CUSTOMER_DEACTIVATED_CODE = 20065
#: 401: missing, unknown or expired bearer token on an API path.
NOT_AUTHENTICATED_CODE = 40001
#: 401: wrong client credentials at the token endpoint.
AUTHENTICATION_FAILED_CODE = 40002
#: 404: no such path (including a path without its trailing slash).
NOT_FOUND_CODE = 40004

#: The signature header name as documented (reference section 6.4).
DEFAULT_SIGNATURE_HEADER = "Http-X-Wh-Signature-256"


#: Which endpoint a recorded request went to (``other``: a path the API does not have).
Endpoint: TypeAlias = Literal["token", "create", "get", "other"]
FaultEndpoint: TypeAlias = Literal["token", "create", "get"]
Outcome: TypeAlias = "str | Callable[[str, dict[str, str]], str]"
Delay: TypeAlias = "float | tuple[float, float] | None"

FAULT_ENDPOINTS: tuple[FaultEndpoint, ...] = ("token", "create", "get")
_TICKET_PREFIX = CREATE_PATH  # "/api/v1/supportTickets/"
# The sandbox parses ids itself rather than sharing the client's code: it is a fake of the
# server and must not share the client's mistakes.
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
)


@attrs.frozen
class RecordedFile:
    """One attachment part of a create request, as the sandbox received it."""

    #: The multipart part name (the API expects ``"files"``).
    field_name: str
    #: The filename exactly as sent in ``Content-Disposition`` (not percent-decoded).
    filename: str | None
    #: The part's ``Content-Type`` header, if any.
    content_type: str | None
    #: Number of bytes in the part.
    size: int
    #: Lowercase hex SHA-256 of the part's bytes.
    sha256: str


@attrs.frozen
class RecordedRequest:
    """One HTTP request the sandbox received, faulted, rejected and dropped ones included."""

    #: Which endpoint the method and path matched.
    endpoint: Endpoint
    method: str
    path: str
    #: The status answered, or ``None`` when the connection was dropped without an answer.
    status: int | None
    #: A copy of the request headers without ``Authorization`` (see ``authorization_scheme``).
    headers: dict[str, str]
    #: ``"Basic"``, ``"Bearer"`` (or whatever scheme was sent); ``None`` if no header.
    authorization_scheme: str | None
    #: The request's ``Content-Length``, if it had one.
    content_length: int | None
    #: Whether the body came with ``Transfer-Encoding: chunked``.
    chunked: bool
    #: Text form fields (create) or the urlencoded form (token; ``client_secret`` redacted).
    fields: dict[str, str] = attrs.field(factory=dict)
    #: Attachment parts of a create request, in order.
    files: tuple[RecordedFile, ...] = ()
    #: The ticket created (create) or asked for (get).
    ticket_id: str | None = None
    #: Event-loop time when the request arrived.
    received_at: float = 0.0
    #: The fault applied to this request, e.g. ``"http:429"``, ``"drop"``, ``"delay:2"``.
    fault: str | None = None
    #: The ``X-Request-Id`` the answer carried.
    request_id: str | None = None

    def header(self, name: str) -> str | None:
        """Return a recorded header, looked up case-insensitively."""
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@attrs.frozen
class SandboxTicket:
    """A ticket held by the sandbox (more than the API shows: fields, files, timings)."""

    ticket_id: str
    customer_id: str
    summary: str
    description: str
    files: tuple[RecordedFile, ...]
    #: ``PENDING``, ``CREATED``, ``FAILED`` or whatever an outcome callable returned.
    status: str
    issue_key: str | None
    #: Event-loop time of creation.
    created_at: float
    #: Event-loop time when the ticket left ``PENDING``.
    finished_at: float | None = None


class WebhookDelivery(NamedTuple):
    """One webhook delivery attempt: ``result`` is the HTTP status or an error description."""

    ticket_id: str
    status: str
    result: int | str


def format_seconds(value: float) -> str:
    """``1.5`` as ``"1.5"``, ``2.0`` as ``"2"``."""
    return format(value, "g") if value != int(value) else str(int(value))


def normalise_uuid(value: str) -> str | None:
    """The canonical form of a UUID written as 32 hex digits (hyphens optional), else None."""
    if not _UUID_RE.fullmatch(value):
        return None
    return str(uuid.UUID(value))


def ticket_id_from_path(path: str) -> str | None:
    """The ticket id segment of a retrieve path, as sent; None for any other path."""
    if not path.startswith(_TICKET_PREFIX) or not path.endswith("/"):
        return None
    segment = path[len(_TICKET_PREFIX) : -1]
    if not segment or "/" in segment:
        return None
    return segment


def endpoint_for(method: str, path: str) -> Endpoint:
    """Which endpoint a method and path reach (``"other"``: none, or the wrong method)."""
    if path == TOKEN_PATH:
        return "token" if method == "POST" else "other"
    if path == CREATE_PATH:
        return "create" if method == "POST" else "other"
    if ticket_id_from_path(path) is not None:
        return "get" if method == "GET" else "other"
    return "other"


def validate_delay(value: Delay) -> Delay:
    """A ``processing_delay`` checked and made float, or ValueError."""
    if value is None:
        return None
    if isinstance(value, tuple):
        low, high = value
        if low < 0 or high < low:
            raise ValueError("processing_delay range must be (min, max) with 0 <= min <= max")
        return (float(low), float(high))
    if value < 0:
        raise ValueError("processing_delay must be >= 0")
    return float(value)
