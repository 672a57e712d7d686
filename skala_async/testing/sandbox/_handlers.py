"""The sandbox's HTTP side: one aiohttp handler that routes, applies faults, answers and
records, and the answers of the token, create and retrieve endpoints."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import secrets
import string
from typing import Any, Protocol
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from skala_async._limits import CREATE_PATH, SUPPORT_TICKETS_NOT_ENABLED_CODE, TOKEN_PATH
from skala_async.testing import _contract
from skala_async.testing.sandbox._faults import (
    Fault,
    FaultKind,
    FaultPlan,
    error,
    fault_response,
    processed_fault_response,
)
from skala_async.testing.sandbox._forms import (
    Problems,
    drain,
    read_form,
    read_limited,
    validate_fields,
)
from skala_async.testing.sandbox._records import Exchange, Recorder, request_line
from skala_async.testing.sandbox._store import TicketStore
from skala_async.testing.sandbox._values import (
    AUTHENTICATION_FAILED_CODE,
    CUSTOMER_DEACTIVATED_CODE,
    CUSTOMER_NOT_FOUND_CODE,
    CUSTOMER_WITHOUT_EMAIL_CODE,
    METHOD_NOT_ALLOWED_CODE,
    NOT_AUTHENTICATED_CODE,
    NOT_FOUND_CODE,
    PARSE_ERROR_CODE,
    TICKET_NOT_FOUND_CODE,
    UNSUPPORTED_MEDIA_TYPE_CODE,
    VALIDATION_ERROR_CODE,
    endpoint_for,
    normalise_uuid,
    ticket_id_from_path,
)

__all__ = ["Handlers", "Settings", "add_request_id"]

#: One INFO line per request received (``skala-tickets -v sandbox`` shows them).
log = logging.getLogger("skala_async.testing.sandbox")

_TOKEN_ALPHABET = string.ascii_letters + string.digits
_MAX_TOKEN_BODY_BYTES = 16 * 1024

# aiohttp 3.14 wants typed keys for request storage; older releases have no RequestKey.
_REQUEST_ID: Any = (
    web.RequestKey("skala_request_id", str) if hasattr(web, "RequestKey") else "skala_request_id"
)


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer carries the request's ``X-Request-Id``."""
    rid = request.get(_REQUEST_ID)
    if rid is not None:
        response.headers["X-Request-Id"] = rid


class Settings(Protocol):
    """The sandbox's plain attributes the handlers read on every request."""

    client_id: str
    client_secret: str
    token_ttl: float
    support_tickets_enabled: bool
    recording: bool
    contract_checks: bool
    contract_violations: list[_contract.ContractViolation]


class _Dropped(Exception):
    """Raised inside the handler to close the connection without an answer."""


class Handlers:
    """Answers the API's requests from the ticket store, under the fault plan."""

    def __init__(
        self,
        settings: Settings,
        store: TicketStore,
        faults: FaultPlan,
        recorder: Recorder,
        tokens: dict[str, float],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._settings = settings
        self._store = store
        self._faults = faults
        self._recorder = recorder
        self._tokens = tokens
        self._loop = loop

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """The one aiohttp handler: every path and method arrives here."""
        request_id = "req-" + secrets.token_hex(8)
        request[_REQUEST_ID] = request_id
        ex = Exchange(endpoint_for(request.method, request.path), self._loop.time(), request_id)
        index = self._recorder.reserve() if self._settings.recording else -1
        status: int | None = None
        try:
            response, fault = await self._handle(request, ex)
            status = response.status
            if self._settings.contract_checks:
                self._check_contract(request, ex, response, fault)
            return response
        except _Dropped:
            if request.transport is not None:
                request.transport.close()
            # aiohttp fails to write this to the closed transport and ignores the reset.
            return web.Response(status=500)
        except ConnectionError:
            # The client went away while its body was being read: nothing to answer.
            return web.Response(status=500)
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            raise
        except Exception:
            status = 500
            raise
        finally:
            if index >= 0:
                self._recorder.fill(index, request, ex, status)
            if log.isEnabledFor(logging.INFO):
                log.info("%s", request_line(request, ex, status))

    async def _handle(
        self, request: web.Request, ex: Exchange
    ) -> tuple[web.Response, Fault | None]:
        fault = self._faults.take(ex.endpoint)
        if fault is not None:
            ex.fault = fault.label
            if fault.answers_before_processing:
                return fault_response(fault), fault
            if fault.kind is FaultKind.DROP:
                if fault.after_body:
                    await drain(request)
                raise _Dropped
        response = await self._answer(request, ex, fault)
        if fault is not None and fault.kind is FaultKind.DROP_AFTER_PROCESSING:
            raise _Dropped
        if fault is not None and fault.kind is FaultKind.HTTP:  # processed: answer otherwise
            return processed_fault_response(fault, response), fault
        return response, fault

    async def _answer(
        self, request: web.Request, ex: Exchange, fault: Fault | None
    ) -> web.Response:
        # Read the whole body first, as a server behind a buffering proxy does: a slow
        # answer (Fault.delay) then still processes the request if the client gives up.
        if ex.endpoint == "token":
            body = await read_limited(request, _MAX_TOKEN_BODY_BYTES)
            await self._delay(fault)
            return self._token(request, ex, body)
        if ex.endpoint == "create":
            problems = Problems()
            parse_error = None
            if request.content_type == "multipart/form-data":
                try:
                    await read_form(request, ex.fields, ex.files, problems)
                except (ValueError, RuntimeError, AssertionError, HttpProcessingError) as exc:
                    parse_error = str(exc) or type(exc).__name__
                    await drain(request)
            await self._delay(fault)
            return self._create(request, ex, problems, parse_error)
        await self._delay(fault)
        if ex.endpoint == "get":
            return self._get(request, ex)
        return _other(request)

    @staticmethod
    async def _delay(fault: Fault | None) -> None:
        if fault is not None and fault.kind is FaultKind.DELAY:
            await asyncio.sleep(fault.seconds)

    def _check_contract(
        self, request: web.Request, ex: Exchange, response: web.Response, fault: Fault | None
    ) -> None:
        body = response.body
        tolerated: tuple[str, ...] = ()
        if ex.endpoint == "get" and ex.ticket_id is not None:
            # A status outside the documented enum is one this sandbox was told to emit.
            ticket = self._store.ticket(ex.ticket_id)
            tolerated = (ticket.status,) if ticket is not None else ()
        self._settings.contract_violations += _contract.check_exchange(
            method=request.method,
            path=request.path,
            request_headers=request.headers,
            fields=ex.fields,
            files=ex.files,
            status=response.status,
            response_headers=response.headers,
            body=body if isinstance(body, bytes) else None,
            injected=fault is not None and fault.kind is FaultKind.HTTP,
            custom_body=fault is not None and fault.body is not None,
            tolerated_statuses=tolerated,
        )

    # token ----------------------------------------------------------------------------------

    def _token(self, request: web.Request, ex: Exchange, body: bytes | None) -> web.Response:
        form: dict[str, str] = {}
        if body is not None:
            try:
                form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            except UnicodeDecodeError:
                form = {}
        ex.fields = {k: ("<redacted>" if k == "client_secret" else v) for k, v in form.items()}
        if not self._basic_auth_ok(request.headers.get("Authorization")):
            return error(
                401,
                AUTHENTICATION_FAILED_CODE,
                "AuthenticationFailed",
                "Invalid client credentials.",
                headers={"WWW-Authenticate": 'Basic realm="api"'},
            )
        if request.content_type != "application/x-www-form-urlencoded":
            return error(
                400,
                VALIDATION_ERROR_CODE,
                "ValidationError",
                "Content-Type must be application/x-www-form-urlencoded.",
            )
        if body is None:
            return error(400, PARSE_ERROR_CODE, "ParseError", "Request body too large.")
        grant = form.get("grant_type")
        if grant != "client_credentials":
            message = "grant_type is required." if grant is None else "Unsupported grant_type."
            return error(
                400,
                VALIDATION_ERROR_CODE,
                "ValidationError",
                message,
                errors={"grant_type": [message]},
            )
        token = "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(30))
        ttl = self._settings.token_ttl
        self._tokens[token] = self._loop.time() + ttl
        return web.json_response(
            {
                "accessToken": token,
                "expiresIn": int(ttl),
                "tokenType": "Bearer",
                "scope": "read write",
            }
        )

    def _basic_auth_ok(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        client_id, sep, client_secret = decoded.partition(":")
        if not sep:
            return False
        settings = self._settings
        id_ok = hmac.compare_digest(client_id.encode(), settings.client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), settings.client_secret.encode())
        return id_ok and secret_ok

    # API auth + switch ----------------------------------------------------------------------

    def _check_api_access(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if not header.strip():
            message = "Authentication credentials were not provided."
        elif scheme.lower() != "bearer" or not token:
            message = "Invalid authorization header."
        else:
            expiry = self._tokens.get(token)
            if expiry is not None and expiry > self._loop.time():
                message = ""
            else:
                self._tokens.pop(token, None)
                message = "Invalid or expired token."
        if message:
            return error(
                401,
                NOT_AUTHENTICATED_CODE,
                "NotAuthenticated",
                message,
                headers={"WWW-Authenticate": 'Bearer realm="api"'},
                code="not_authenticated",
            )
        if not self._settings.support_tickets_enabled:
            return error(
                403,
                SUPPORT_TICKETS_NOT_ENABLED_CODE,
                "SupportTicketsNotEnabledException",
                "Support tickets are not enabled for this partner.",
            )
        return None

    # get ------------------------------------------------------------------------------------

    def _get(self, request: web.Request, ex: Exchange) -> web.Response:
        raw_id = ticket_id_from_path(request.path)
        ex.ticket_id = raw_id
        denied = self._check_api_access(request)
        if denied is not None:
            return denied
        ticket = self._store.ticket(raw_id) if raw_id is not None else None
        if ticket is None:
            return error(
                404,
                TICKET_NOT_FOUND_CODE,
                "SupportTicketNotFoundException",
                f"Support ticket '{raw_id}' not found.",
            )
        return web.json_response(
            {"ticketId": ticket.ticket_id, "status": ticket.status, "issueKey": ticket.issue_key}
        )

    # create ---------------------------------------------------------------------------------

    def _create(
        self, request: web.Request, ex: Exchange, problems: Problems, parse_error: str | None
    ) -> web.Response:
        denied = self._check_api_access(request)
        if denied is not None:
            return denied
        if request.content_type != "multipart/form-data":
            return error(
                415,
                UNSUPPORTED_MEDIA_TYPE_CODE,
                "UnsupportedMediaType",
                f'Unsupported media type "{request.content_type}" in request; '
                "expected multipart/form-data.",
            )
        if parse_error is not None:
            message = f"Multipart form parse error: {parse_error}"
            return error(400, PARSE_ERROR_CODE, "ParseError", message)
        validate_fields(ex.fields, problems)
        if problems:
            return error(
                400,
                VALIDATION_ERROR_CODE,
                "ValidationError",
                "Invalid input.",
                errors=problems.errors,
            )
        refused = self._refuse_customer(ex.fields["customerId"])
        if refused is not None:
            return refused
        customer_id = normalise_uuid(ex.fields["customerId"])
        assert customer_id is not None
        ticket = self._store.create(customer_id, ex.fields, ex.files)
        ex.ticket_id = ticket.ticket_id
        return web.json_response(
            {"ticketId": ticket.ticket_id, "status": "PENDING", "issueKey": None}, status=202
        )

    def _refuse_customer(self, sent_id: str) -> web.Response | None:
        """The answer for a create for an unknown, deactivated or email-less customer."""
        customer = self._store.customer(sent_id)
        if customer is None:
            return error(
                400,
                CUSTOMER_NOT_FOUND_CODE,
                "CustomerNotFoundException",
                f"Customer '{sent_id}' not found.",
            )
        if not customer.active:
            return error(
                404,
                CUSTOMER_DEACTIVATED_CODE,
                "CustomerDeactivatedException",
                f"Customer '{sent_id}' is not active.",
            )
        if not customer.email:
            return error(
                400,
                CUSTOMER_WITHOUT_EMAIL_CODE,
                "CustomerWithoutEmailException",
                f"Customer '{sent_id}' has no email address on file.",
            )
        return None


def _other(request: web.Request) -> web.Response:
    """A known path with the wrong method (405), or no such path (404)."""
    path = request.path
    if path in (TOKEN_PATH, CREATE_PATH) or ticket_id_from_path(path) is not None:
        allowed = "GET" if ticket_id_from_path(path) is not None else "POST"
        return error(
            405,
            METHOD_NOT_ALLOWED_CODE,
            "MethodNotAllowed",
            f'Method "{request.method}" not allowed.',
            headers={"Allow": allowed},
        )
    return error(404, NOT_FOUND_CODE, "NotFound", "Not found.")
