"""Unit-test stand-in for the Skala API, built on aioresponses: no server, no sockets.

For unit tests of your own code where starting :class:`SkalaSandbox` is more than you
need. It answers the token endpoint, then whatever you script: creates (202 PENDING or an
error), the successive states of a ticket, errors with the API's body shape::

    from skala_async.testing import FAST_POLL, mock_skala

    async def test_escalation_waits_for_the_issue_key():
        with mock_skala() as api:
            tid = api.accept_create()  # the next create answers 202 PENDING
            api.ticket_states(tid, "PENDING", "CREATED", issue_key="SUP-7")
            async with api.client(poll=FAST_POLL) as client:
                assert await escalate(client) == "SUP-7"  # your code
            assert api.count("create") == 1
            assert api.sent_fields()[0]["summary"] == "Escalation: card top-up"

It needs the ``aioresponses`` package (install ``aioresponses-ng``, the maintained fork, on
aiohttp 3.14). aioresponses patches aiohttp inside the ``with`` block, so it also stands in
for a session of yours. What it cannot show: the bytes on the wire (multipart encoding,
``Content-Length``, timeouts); test those against :class:`SkalaSandbox`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from skala_async._limits import (
    CREATE_PATH,
    SUPPORT_TICKETS_NOT_ENABLED_CODE,
    TICKET_PATH,
    TOKEN_PATH,
)
from skala_async._protocol import redact_url
from skala_async.client import SANDBOX_URL

if TYPE_CHECKING:
    from skala_async.client import SkalaClient

__all__ = ["MockSkala", "mock_skala"]

#: The credentials :meth:`MockSkala.client` uses (the mock accepts any).
MOCK_CLIENT_ID = "mock-client"
MOCK_CLIENT_SECRET = "mock-secret"  # noqa: S105 - a stand-in's made-up credential

_ENDPOINTS = ("token", "create", "get")


def _error_body(status: int, code: int | None, type_: str | None, message: str) -> str:
    return json.dumps(
        {
            "code": code if code is not None else 20000 + status,
            "type": type_ or "ApiException",
            "detail": {"message": message},
            "status": status,
        }
    )


class MockSkala:
    """The scripted API: see the module docstring. Use :func:`mock_skala` to make one."""

    def __init__(self, base_url: str = SANDBOX_URL) -> None:
        try:
            from aioresponses import aioresponses
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "skala_async.testing.mock needs aioresponses: pip install aioresponses-ng"
            ) from exc
        self.base_url = base_url.rstrip("/")
        self._mocker = aioresponses()
        self._token_count = 0
        self._access_token = ""
        self._expires_in = 36000

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> MockSkala:
        self._mocker.start()
        self.token()
        self._mocker.post(self.base_url + TOKEN_PATH, callback=self._token_answer, repeat=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._mocker.stop()

    def __repr__(self) -> str:
        counts = ", ".join(f"{e}={self.count(e)}" for e in _ENDPOINTS)
        return f"<MockSkala {redact_url(self.base_url)} {counts}>"

    def client(self, **kwargs: Any) -> SkalaClient:
        """A :class:`~skala_async.SkalaClient` pointed at this mock (any credentials do)."""
        from skala_async.client import SkalaClient

        kwargs.setdefault("base_url", self.base_url)
        if "token" not in kwargs:
            kwargs.setdefault("client_id", MOCK_CLIENT_ID)
            kwargs.setdefault("client_secret", MOCK_CLIENT_SECRET)
        return SkalaClient(**kwargs)

    # ------------------------------------------------------------------ scripting

    def token(self, access_token: str | None = None, expires_in: int = 36000) -> None:
        """The token every later token request gets (one is set on entry)."""
        self._token_count += 1
        self._access_token = access_token or f"mock-token-{self._token_count}"
        self._expires_in = expires_in

    def _token_answer(self, url: object, **kwargs: Any) -> Any:
        from aioresponses import CallbackResult

        return CallbackResult(
            status=200,
            payload={
                "accessToken": self._access_token,
                "expiresIn": self._expires_in,
                "tokenType": "Bearer",
                "scope": "read write",
            },
        )

    def accept_create(self, ticket_id: uuid.UUID | str | None = None) -> uuid.UUID:
        """The next create answers 202 PENDING with ``ticket_id`` (a new one by default)."""
        tid = uuid.UUID(str(ticket_id)) if ticket_id is not None else uuid.uuid4()
        self._mocker.post(
            self.base_url + CREATE_PATH,
            status=202,
            payload={"ticketId": str(tid), "status": "PENDING", "issueKey": None},
        )
        return tid

    def ticket_states(
        self, ticket_id: uuid.UUID | str, *statuses: str, issue_key: str | None = "SUP-1"
    ) -> None:
        """Successive GETs of ``ticket_id`` answer these statuses; the last one repeats.

        ``issue_key`` is sent with ``CREATED`` only, ``null`` otherwise. Scripted answers
        are used in the order they were given, and the last state repeats for ever: script
        an :meth:`error` for a GET before the states it should come before.
        """
        if not statuses:
            raise ValueError("give at least one status")
        url = self.base_url + TICKET_PATH.format(ticket_id=uuid.UUID(str(ticket_id)))
        for i, status in enumerate(statuses):
            self._mocker.get(
                url,
                payload={
                    "ticketId": str(uuid.UUID(str(ticket_id))),
                    "status": status,
                    "issueKey": issue_key if status == "CREATED" else None,
                },
                repeat=i == len(statuses) - 1,
            )

    def error(
        self,
        endpoint: str,
        status: int,
        *,
        code: int | None = None,
        type: str | None = None,
        message: str = "scripted error",
        retry_after: float | None = None,
        ticket_id: uuid.UUID | str | None = None,
        times: int = 1,
    ) -> None:
        """The next ``times`` requests to ``endpoint`` (``"token"``, ``"create"``, ``"get"``)
        answer ``status`` with the API's error body; GETs of any ticket unless ``ticket_id``.
        """
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        body = _error_body(status, code, type, message)
        url: str | re.Pattern[str]
        if endpoint == "token":
            method, url = "POST", self.base_url + TOKEN_PATH
        elif endpoint == "create":
            method, url = "POST", self.base_url + CREATE_PATH
        elif endpoint == "get":
            method = "GET"
            if ticket_id is not None:
                url = self.base_url + TICKET_PATH.format(ticket_id=uuid.UUID(str(ticket_id)))
            else:
                url = re.compile(re.escape(self.base_url + CREATE_PATH) + r"[^/]+/$")
        else:
            raise ValueError(f"endpoint must be one of {_ENDPOINTS}, not {endpoint!r}")
        for _ in range(times):
            self._mocker.add(
                url,
                method,
                status=status,
                body=body,
                content_type="application/json",
                headers=headers,
            )

    def not_enabled(self, endpoint: str = "create", *, times: int = 1) -> None:
        """The next requests to ``endpoint`` answer 403 / 20061 (support tickets not on)."""
        self.error(
            endpoint,
            403,
            code=SUPPORT_TICKETS_NOT_ENABLED_CODE,
            type="SupportTicketsNotEnabledException",
            message="Support tickets are not enabled for this partner.",
            times=times,
        )

    # ------------------------------------------------------------------ what was sent

    def _calls(self, endpoint: str) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        for (method, url), calls in (self._mocker.requests or {}).items():
            path = url.path
            kind = (
                "token"
                if path == TOKEN_PATH
                else "create"
                if path == CREATE_PATH and method == "POST"
                else "get"
                if path.startswith(CREATE_PATH) and method == "GET"
                else "other"
            )
            if kind == endpoint:
                for call in calls:
                    yield method, str(url), call.kwargs

    def count(self, endpoint: str) -> int:
        """How many requests reached ``endpoint`` (retries included)."""
        return sum(1 for _ in self._calls(endpoint))

    def sent_fields(self) -> list[dict[str, Any]]:
        """The text fields and attachment names of each create request, in order.

        Each item is ``{"customerId": ..., "summary": ..., "description": ...,
        "files": [(filename, content_type, size), ...]}``.
        """
        out = []
        for _, _, kwargs in self._calls("create"):
            body = kwargs.get("data")
            multipart = getattr(body, "_multipart", None)
            fields: dict[str, Any] = {"files": []}
            # The text fields the transport rendered itself; any others are parts below.
            fields.update(getattr(body, "rendered_fields", ()))
            for part, _, _ in getattr(multipart, "_parts", ()):
                disposition = part.headers.get("Content-Disposition", "")
                name = re.search(r'name="([^"]*)"', disposition)
                if part.filename is not None:
                    fields["files"].append((part.filename, part.content_type, part.size))
                elif name is not None:
                    fields[name.group(1)] = part.decode("utf-8")
            out.append(fields)
        return out


def mock_skala(base_url: str = SANDBOX_URL) -> MockSkala:
    """A :class:`MockSkala` for ``base_url`` (default :data:`SANDBOX_URL`), used as
    ``with mock_skala() as api: ...``."""
    return MockSkala(base_url)
