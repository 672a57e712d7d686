"""The ASGI webhook receiver: requests, lifespan and other scopes."""

from __future__ import annotations

from typing import Any

from skala_async.webhooks import (
    WebhookReceiver,
)
from tests.helpers.webhooks import (
    SECRET,
    Recorder,
    event_dict,
    signed,
    wire,
)


class AsgiCall:
    """Drive an ASGI app with one request; collect what it sends."""

    def __init__(self, chunks: list[bytes], headers: dict[str, str], method: str = "POST") -> None:
        self.messages = [
            {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
            for i, chunk in enumerate(chunks)
        ]
        self.scope = {
            "type": "http",
            "method": method,
            "path": "/",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return self.messages.pop(0) if self.messages else {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def run(self, app: Any) -> tuple[int | None, bytes]:
        await app(self.scope, self.receive, self.send)
        if not self.sent:
            return None, b""
        return self.sent[0]["status"], b"".join(m.get("body", b"") for m in self.sent[1:])


async def test_asgi_app() -> None:
    recorder = Recorder()
    receiver = WebhookReceiver(SECRET, recorder, max_body_bytes=2048)
    body = wire(event_dict())
    assert await AsgiCall([body[:20], body[20:]], signed(body)).run(receiver.asgi) == (200, b"ok")
    assert (await AsgiCall([body], signed(body)).run(receiver.asgi))[1] == b"duplicate"
    assert (await AsgiCall([body], {}).run(receiver.asgi))[0] == 401
    assert (await AsgiCall([b"x"], signed(b"x")).run(receiver.asgi))[0] == 400
    length = {"Content-Length": "999999", **signed(body)}
    assert (await AsgiCall([body], length).run(receiver.asgi))[0] == 413
    assert (await AsgiCall([b" " * 1500] * 2, {}).run(receiver.asgi))[0] == 413
    assert (await AsgiCall([body], {"Content-Length": "x"}).run(receiver.asgi))[0] == 400
    call = AsgiCall([], {}, method="GET")
    assert (await call.run(receiver.asgi))[0] == 405
    assert (b"allow", b"POST") in call.sent[0]["headers"]
    # The client went away mid-body: nothing is answered, nothing is delivered.
    gone = AsgiCall([body[:10]], signed(body))
    gone.messages[0]["more_body"] = True
    assert await gone.run(receiver.asgi) == (None, b"")
    assert recorder.calls == 1


async def test_asgi_lifespan_and_other_scopes() -> None:
    receiver = WebhookReceiver(SECRET)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await receiver.asgi({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    await receiver.asgi({"type": "websocket"}, receive, send)
    assert len(sent) == 2


# ------------------------------------------------------------------------------ the sandbox
