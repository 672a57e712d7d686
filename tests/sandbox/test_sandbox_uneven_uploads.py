"""An upload that reaches the sandbox in uneven pieces is read whole, under warnings-as-errors.

aiohttp's multipart reader calls its own deprecated ``StreamReader.unread_data()`` when a few
bytes of a part arrive on their own and a large piece follows. Under ``filterwarnings = error``
(this suite's setting, and many users') that warning was raised in the middle of the read and
the sandbox answered 500: a create that failed on TCP timing alone. The sandbox silences that
one warning at import, and the pytest plugin adds the same filter to pytest's.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
import warnings
from unittest import mock

import aiohttp
import pytest
from aiohttp import streams
from aiohttp.test_utils import make_mocked_request

from skala_async.testing import SkalaSandbox, pytest_plugin
from skala_async.testing.sandbox import _forms as sandbox_forms
from tests.helpers.sandbox_wire import CREATE, get_token

_BOUNDARY = "uneven-pieces-boundary"
_CONTENT = bytes(range(256)) * 1200  # 300 KiB: more than the sandbox's 256 KiB read


def _body(customer: str) -> tuple[bytes, bytes, bytes]:
    """The create's multipart body cut in three: fields and 10 file bytes, 5 bytes, the rest."""
    fields = "".join(
        f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (("customerId", customer), ("summary", "s"), ("description", "d"))
    )
    head = (
        fields + f"--{_BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="files"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    tail = f"\r\n--{_BOUNDARY}--\r\n".encode()
    return head + _CONTENT[:10], _CONTENT[10:15], _CONTENT[15:] + tail


async def _read_in_pieces() -> tuple[dict[str, str], list[sandbox_forms.RecordedFile]]:
    """Feed the body to the sandbox's form reader piece by piece, each read before the next."""
    stream = streams.StreamReader(
        mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop()
    )
    request = make_mocked_request(
        "POST",
        CREATE,
        headers={"Content-Type": f"multipart/form-data; boundary={_BOUNDARY}"},
        payload=stream,
    )

    async def feed() -> None:
        for piece in _body(str(uuid.uuid4())):
            stream.feed_data(piece)
            for _ in range(5):  # let the reader take what is there and wait for more
                await asyncio.sleep(0)
        stream.feed_eof()

    fields: dict[str, str] = {}
    files: list[sandbox_forms.RecordedFile] = []
    problems = sandbox_forms.Problems()
    feeder = asyncio.create_task(feed())
    try:
        await sandbox_forms.read_form(request, fields, files, problems)
    finally:
        await feeder
    assert not problems
    return fields, files


def _assert_read_whole(files: list[sandbox_forms.RecordedFile]) -> None:
    (recorded,) = files
    assert recorded.size == len(_CONTENT)
    assert recorded.sha256 == hashlib.sha256(_CONTENT).hexdigest()


async def test_the_pieces_make_aiohttp_warn_without_the_filter() -> None:
    # The other tests would prove nothing if this body did not reach aiohttp's warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, files = await _read_in_pieces()
    if not any("unread_data" in str(w.message) for w in caught):
        pytest.skip("this aiohttp no longer calls unread_data() while reading a part")
    _assert_read_whole(files)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DeprecationWarning, match="unread_data"):
            await _read_in_pieces()


async def test_read_whole_under_this_suites_warnings_as_errors() -> None:
    # pytest's "error" filter is in force here; the plugin's filter is what lets this pass.
    fields, files = await _read_in_pieces()
    assert fields["summary"] == "s"
    _assert_read_whole(files)


async def test_read_whole_under_warnings_as_errors_outside_pytest() -> None:
    # As in `python -W error your_tests.py`: the filter the sandbox installs at import.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sandbox_forms.silence_aiohttp_unread_warning()
        _, files = await _read_in_pieces()
    _assert_read_whole(files)


async def test_other_deprecation_warnings_stay_errors() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sandbox_forms.silence_aiohttp_unread_warning()
        with pytest.raises(DeprecationWarning):
            warnings.warn("something else is deprecated", DeprecationWarning, stacklevel=1)
        with pytest.raises(DeprecationWarning):
            # The same words from another module are not silenced.
            warnings.warn("unread_data() is deprecated", DeprecationWarning, stacklevel=1)


def test_the_plugin_and_the_sandbox_install_the_same_filter() -> None:
    action, message, category, module = pytest_plugin.UNREAD_FILTER.split(":")
    assert (action, category) == ("ignore", "DeprecationWarning")
    assert message == sandbox_forms.UNREAD_WARNING
    with warnings.catch_warnings():
        sandbox_forms.silence_aiohttp_unread_warning()
        installed = warnings.filters[0]
    assert installed[0] == "ignore"
    assert installed[1] is not None
    assert installed[1].pattern == message
    assert installed[2] is DeprecationWarning
    assert installed[3] is not None
    assert installed[3].pattern == module


async def test_an_upload_sent_in_uneven_pieces_is_created(sb: SkalaSandbox) -> None:
    """On the wire: the same body written to the sandbox in three pieces, with pauses (whether
    aiohttp reaches its warning then depends on TCP timing; the tests above make sure it does)."""
    async with aiohttp.ClientSession() as http:
        token = await get_token(http, sb)
    pieces = _body(sb.add_customer())
    host, port = sb.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            (
                f"POST {CREATE} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Authorization: Bearer {token}\r\n"
                f"Content-Type: multipart/form-data; boundary={_BOUNDARY}\r\n"
                f"Content-Length: {sum(map(len, pieces))}\r\nConnection: close\r\n\r\n"
            ).encode()
        )
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    assert status_line.split()[1] == b"202"
    (record,) = sb.requests_to("create")
    _assert_read_whole(list(record.files))
    assert len(sb.tickets) == 1
