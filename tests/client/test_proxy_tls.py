"""Proxies and TLS, over real connections.

The sandbox serves HTTPS with a certificate from a private CA made by ``trustme``; the
proxy is proxy.py (a maintained proxy server from PyPI) started on 127.0.0.1 with basic
authentication. A small TCP tap in front of it (or of the sandbox) records the bytes the
client sends and counts its connections, so tests see exactly what a proxy would see.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from skala_async import SkalaClient, TransportError
from skala_async.cli import main
from skala_async.testing import SkalaSandbox, sandbox_client
from tests.helpers.cli import threaded_sandbox

PROXY_USER, PROXY_PASSWORD = "proxyuser", "Pr0xy-Pa55-Walrus"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="module")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


@pytest.fixture
async def https_sandbox(server_ssl: ssl.SSLContext) -> AsyncIterator[SkalaSandbox]:
    async with SkalaSandbox(ssl_context=server_ssl, processing_delay=0.02) as sandbox:
        yield sandbox


def _proxy_command() -> list[str]:
    exe = shutil.which("proxy", path=os.path.dirname(sys.executable))
    assert exe is not None, "proxy.py is in the test extra"
    return [exe]


@pytest.fixture(scope="module")
def proxy_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """proxy.py on 127.0.0.1 (a free port), requiring basic authentication."""
    port_file = tmp_path_factory.mktemp("proxy") / "port"
    process = subprocess.Popen(  # noqa: S603 - the proxy.py of this environment
        [
            *_proxy_command(),
            "--hostname",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--num-workers",
            "1",
            "--num-acceptors",
            "1",
            "--threaded",
            "--basic-auth",
            f"{PROXY_USER}:{PROXY_PASSWORD}",
            "--log-level",
            "ERROR",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = _wait_for_port(port_file, process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck proxy
            process.kill()
            process.wait(10)


def _wait_for_port(port_file: Path, process: subprocess.Popen[bytes]) -> int:
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        assert process.poll() is None, "proxy.py exited"
        text = port_file.read_text().strip() if port_file.exists() else ""
        if text:
            port = int(text.split()[0])
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return port
        time.sleep(0.05)
    raise AssertionError("proxy.py did not start")


class Tap:
    """A TCP relay to ``127.0.0.1:target`` that records what clients send through it."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sent = bytearray()
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Tap:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool) -> None:
            try:
                while data := await src.read(65536):
                    if record:
                        self.sent += data
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        tasks = [
            asyncio.ensure_future(pipe(reader, up_writer, True)),
            asyncio.ensure_future(pipe(up_reader, writer, False)),
        ]
        self._tasks.update(tasks)
        try:
            await asyncio.gather(*tasks)
        finally:
            self._tasks.difference_update(tasks)


def proxy_url(port: int, password: str = PROXY_PASSWORD) -> str:
    return f"http://{PROXY_USER}:{password}@127.0.0.1:{port}"


async def test_requests_through_the_proxy_are_tunnelled_and_hide_every_credential(
    https_sandbox: SkalaSandbox, client_ssl: ssl.SSLContext, proxy_port: int
) -> None:
    sandbox = https_sandbox
    async with (
        Tap(proxy_port) as tap,
        sandbox_client(sandbox, proxy=proxy_url(tap.port), ssl=client_ssl) as client,
    ):
        handle = await client.create_ticket(sandbox.customer_id, "Visible summary", "Body")
        ticket = await handle.wait_until_created(timeout=30)
        token = client._auth.cached()
        assert "Pr0xy" not in repr(client)
    assert ticket.issue_key
    assert sandbox.count("create") == 1
    assert sandbox.count("token") == 1
    seen = bytes(tap.sent)
    sandbox_port = sandbox.url.rsplit(":", 1)[1]
    # the proxy saw tunnel requests (with its own credentials), then only TLS
    assert seen.startswith(f"CONNECT 127.0.0.1:{sandbox_port} HTTP/1.1\r\n".encode())
    proxy_auth = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode())
    assert b"Proxy-Authorization: Basic " + proxy_auth in seen
    assert token is not None
    basic = base64.b64encode(f"{sandbox.client_id}:{sandbox.client_secret}".encode())
    for secret in (
        sandbox.client_secret.encode(),
        basic,
        token.encode(),
        b"Bearer",
        b"Visible summary",
        sandbox.customer_id.encode(),
        b"/api/v1/supportTickets/",
    ):
        assert secret not in seen


async def test_https_proxy_and_no_proxy_from_the_environment(
    https_sandbox: SkalaSandbox,
    client_ssl: ssl.SSLContext,
    proxy_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox = https_sandbox
    async with Tap(proxy_port) as tap:
        monkeypatch.setenv("HTTPS_PROXY", proxy_url(tap.port))
        async with sandbox_client(sandbox, ssl=client_ssl, trust_env=True) as client:
            await client.create_ticket(sandbox.customer_id, "s", "d")
        assert tap.connections >= 1
        assert bytes(tap.sent).startswith(b"CONNECT ")
        through_proxy = tap.connections
        # NO_PROXY exempts the host; trust_env=False ignores the environment altogether
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        async with sandbox_client(sandbox, ssl=client_ssl, trust_env=True) as client:
            await client.create_ticket(sandbox.customer_id, "s", "d")
        monkeypatch.delenv("NO_PROXY")
        async with sandbox_client(sandbox, ssl=client_ssl, trust_env=False) as client:
            await client.create_ticket(sandbox.customer_id, "s", "d")
        async with sandbox_client(sandbox, ssl=client_ssl) as client:  # sandbox_client's default
            await client.create_ticket(sandbox.customer_id, "s", "d")
        assert tap.connections == through_proxy
    assert sandbox.count("create") == 4


async def test_a_certificate_that_does_not_verify_is_a_clear_error_not_retried(
    https_sandbox: SkalaSandbox,
) -> None:
    sandbox = https_sandbox
    port = int(sandbox.url.rsplit(":", 1)[1])
    async with Tap(port) as tap:
        url = f"https://127.0.0.1:{tap.port}"
        # the system's trust store does not know the private CA
        async with SkalaClient(token="static-t0ken", base_url=url) as client:
            with pytest.raises(TransportError) as info:
                await client.get_ticket("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")
        assert tap.connections == 1  # GETs are retried freely, but not this
    error = info.value
    assert not error.retryable
    assert "TLS certificate of 127.0.0.1" in str(error)
    assert "does not verify" in str(error)
    assert "ssl=" in str(error)
    assert "static-t0ken" not in str(error)
    assert sandbox.requests == []


async def test_a_wrong_proxy_password_or_a_dead_proxy_never_shows_the_password(
    https_sandbox: SkalaSandbox, client_ssl: ssl.SSLContext, proxy_port: int
) -> None:
    wrong = "Wr0ng-Pa55-Narwhal"
    async with sandbox_client(
        https_sandbox, proxy=proxy_url(proxy_port, wrong), ssl=client_ssl
    ) as client:
        with pytest.raises(TransportError) as info:
            await client.create_ticket(https_sandbox.customer_id, "s", "d")
    assert "the proxy refused the request: 407" in str(info.value)
    assert not info.value.retryable
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    async with sandbox_client(
        https_sandbox, proxy=proxy_url(dead, wrong), ssl=client_ssl
    ) as client:
        with pytest.raises(TransportError) as dead_info:
            await client.get_ticket("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")
    assert https_sandbox.requests == []
    for exc in (info.value, dead_info.value):
        chain: BaseException | None = exc
        while chain is not None:  # the message, and what a traceback would print
            assert wrong not in str(chain), repr(chain)
            chain = chain.__cause__ or chain.__context__
            if chain is not None and not isinstance(chain, Exception):
                break
        assert wrong not in str(exc)


@pytest.mark.parametrize(
    ("proxy", "error"),
    [
        ("socks5://u:Secret-Pw@127.0.0.1:1080", ValueError),
        ("127.0.0.1:3128", ValueError),
        ("http://u:Secret-Pw@127.0.0.1:port", ValueError),
        (3128, TypeError),
    ],
)
def test_a_bad_proxy_is_refused_without_echoing_it(proxy: object, error: type) -> None:
    with pytest.raises(error) as info:
        SkalaClient(token="t", proxy=proxy)  # type: ignore[arg-type]
    assert "Secret-Pw" not in str(info.value)


def test_ssl_must_be_a_context() -> None:
    with pytest.raises(TypeError, match="SSLContext"):
        SkalaClient(token="t", ssl="/etc/ssl/cert.pem")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ CLI


def test_cli_proxy_and_ca_file(
    ca: trustme.CA,
    server_ssl: ssl.SSLContext,
    proxy_port: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    with threaded_sandbox(ssl_context=server_ssl, processing_delay=0.02) as sb:
        creds = [
            "--base-url",
            sb.url,
            "--client-id",
            sb.client_id,
            "--client-secret",
            sb.client_secret,
        ]
        args = ["--customer-id", sb.customer_id, "--summary", "s", "--description", "d"]
        code = main(
            ["create", *creds, *args, "--ca-file", str(pem), "--proxy", proxy_url(proxy_port)]
        )
        out, err = capsys.readouterr()
        assert code == 0, err
        assert sb.count("create") == 1
        # without the CA file the certificate does not verify: exit 4, nothing sent
        code = main(["create", *creds, *args])
        out, err = capsys.readouterr()
        assert code == 4
        assert "certificate" in err
        assert sb.count("create") == 1
        # a wrong proxy password: refused by the proxy, never printed
        code = main(
            [
                "create",
                *creds,
                *args,
                "--ca-file",
                str(pem),
                "--proxy",
                proxy_url(proxy_port, "Bad-Pw-Yak"),
            ]
        )
        out, err = capsys.readouterr()
        assert code == 4
        assert "Bad-Pw-Yak" not in out + err
        assert sb.count("create") == 1


def test_cli_ca_file_problems_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["get", "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", "--token", "t"]
    assert main([*common, "--ca-file", str(tmp_path / "missing.pem")]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    assert main([*common, "--ca-file", str(junk)]) == 2
    assert "no usable PEM" in capsys.readouterr().err
    assert main([*common, "--proxy", "ftp://u:Pw-Secret@h"]) == 2
    err = capsys.readouterr().err
    assert "proxy" in err
    assert "Pw-Secret" not in err


@pytest.mark.parametrize(
    ("proxy", "error"),
    [
        ("http://u:Env-Pw-Ibis@127.0.0.1:notaport", ValueError),
        ("http://u:Env-Pw-Ibis@[::1", ValueError),  # not even a URL
        ("socks5://u:Env-Pw-Ibis@127.0.0.1:1080", ValueError),
        ("http://u:Env%2FPw%40Ibis@127.0.0.1:1", TransportError),  # nobody listening
    ],
)
async def test_a_broken_proxy_from_the_environment_never_shows_its_password(
    proxy: str, error: type[Exception], https_sandbox: SkalaSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    async with sandbox_client(https_sandbox, trust_env=True) as client:
        with pytest.raises(error, match=r"HTTPS_PROXY|cannot connect to the proxy") as info:
            await client.get_ticket("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")
    text = "".join(traceback.format_exception(info.value))
    for secret in ("Env-Pw-Ibis", "Env%2FPw%40Ibis", "Env/Pw@Ibis"):
        assert secret not in text
    assert https_sandbox.requests == []
