"""Talking to a sandbox over plain aiohttp: credentials, forms, hand-made multipart bodies,
and a tiny webhook receiver."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy

from skala_async.testing import (
    SkalaSandbox,
)

TOKEN = "/oauth2/token/"


CREATE = "/api/v1/supportTickets/"


DISCONNECTED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def basic(client_id: str, client_secret: str) -> dict[str, str]:
    # aiohttp 3.14 deprecates BasicAuth; build the header by hand.
    raw = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def get_token(http: aiohttp.ClientSession, sb: SkalaSandbox) -> str:
    async with http.post(
        sb.url + TOKEN,
        data={"grant_type": "client_credentials"},
        headers=basic(sb.client_id, sb.client_secret),
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    return str(body["accessToken"])


def ticket_form(
    customer_id: str,
    *,
    summary: str | None = "Card top-up not credited",
    description: str | None = "I topped up 100 and nothing arrived.",
    files: Sequence[tuple[str | None, bytes, str]] = (),
) -> aiohttp.FormData:
    form = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    form.add_field("customerId", customer_id)
    if summary is not None:
        form.add_field("summary", summary)
    if description is not None:
        form.add_field("description", description)
    for filename, content, content_type in files:
        # BytesIO, not bytes: aiohttp 3.14 warns on large bytes and on bytes without filename
        form.add_field("files", io.BytesIO(content), filename=filename, content_type=content_type)
    return form


async def create(
    http: aiohttp.ClientSession,
    sb: SkalaSandbox,
    token: str,
    form: aiohttp.FormData | None = None,
) -> tuple[int, dict[str, Any], CIMultiDictProxy[str]]:
    data = form if form is not None else ticket_form(sb.customer_id)
    async with http.post(
        sb.url + CREATE, data=data, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.status, await resp.json(), resp.headers


async def get_ticket(
    http: aiohttp.ClientSession, sb: SkalaSandbox, token: str, ticket_id: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(
        f"{sb.url}{CREATE}{ticket_id}/", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        return resp.status, await resp.json()


class receiver:
    """A tiny aiohttp.web app on port 0 that runs ``handler`` for every POST."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handler)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


BOUNDARY = "sandbox-more-boundary"


def multipart(parts: Sequence[tuple[str, bytes]]) -> bytes:
    """A multipart body from (headers, content) pairs, byte for byte as given."""
    out = b""
    for headers, content in parts:
        out += f"--{BOUNDARY}\r\n{headers}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def field(name: str, value: bytes, content_type: str | None = None) -> tuple[str, bytes]:
    headers = f'Content-Disposition: form-data; name="{name}"'
    if content_type:
        headers += f"\r\nContent-Type: {content_type}"
    return headers, value


async def post_form(
    http: aiohttp.ClientSession, sb: SkalaSandbox, parts: Sequence[tuple[str, bytes]]
) -> tuple[int, dict[str, object]]:
    token = await get_token(http, sb)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    async with http.post(sb.url + CREATE, data=multipart(parts), headers=headers) as resp:
        return resp.status, await resp.json()


def required(sb: SkalaSandbox) -> list[tuple[str, bytes]]:
    return [
        field("customerId", sb.customer_id.encode()),
        field("summary", b"Summary"),
        field("description", b"Description"),
    ]
