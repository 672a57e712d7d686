"""The demo's sample attachments are valid files, byte for byte the same each run."""

from __future__ import annotations

import re
import struct
import zlib

from skala_async._env import env_base_url, env_credentials
from skala_async.cli._samples import _pdf_bytes, _png_bytes


def test_png_is_valid_chunk_by_chunk() -> None:
    data = _png_bytes(7, 5)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    pos, kinds, idat = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, kind
        kinds.append(kind)
        if kind == b"IHDR":
            assert struct.unpack(">II", body[:8]) == (7, 5)
        if kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert pos == len(data)
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    assert len(zlib.decompress(idat)) == 5 * (1 + 7 * 3)  # filter byte + RGB per row
    assert _png_bytes(7, 5) == data


def test_pdf_has_header_xref_with_true_offsets_and_eof() -> None:
    data = _pdf_bytes("Receipt (copy) \\ 1")
    assert data.startswith(b"%PDF-1.4\n")
    assert data.endswith(b"%%EOF\n")
    startxref = int(re.search(rb"startxref\n(\d+)\n", data).group(1))  # type: ignore[union-attr]
    assert data[startxref:].startswith(b"xref\n0 6\n")
    offsets = re.findall(rb"(\d{10}) 00000 n ", data[startxref:])
    assert len(offsets) == 5
    for number, offset in enumerate(offsets, 1):
        assert data[int(offset) :].startswith(b"%d 0 obj\n" % number)
    assert b"(Receipt \\(copy\\) \\\\ 1)" in data  # parentheses and backslash escaped
    assert _pdf_bytes("Receipt (copy) \\ 1") == data


def test_env_reads_unset_and_empty_as_none() -> None:
    assert env_credentials({}) == (None, None)
    assert env_credentials({"SKALA_CLIENT_ID": "", "SKALA_CLIENT_SECRET": ""}) == (None, None)
    assert env_credentials({"SKALA_CLIENT_ID": "i", "SKALA_CLIENT_SECRET": "s"}) == ("i", "s")
    assert env_base_url({"SKALA_BASE_URL": ""}) is None
    assert env_base_url({"SKALA_BASE_URL": "http://127.0.0.1:1"}) == "http://127.0.0.1:1"
