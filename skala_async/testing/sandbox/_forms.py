"""Reading request bodies: the token form and the create multipart, with every limit checked.

The limits come from :mod:`skala_async._limits` (the documented numbers), but the checks are
written here again on purpose: the sandbox fakes the server and must not share a mistake of
the client's own validation.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from skala_async._limits import (
    ALLOWED_EXTENSIONS,
    MAX_DESCRIPTION_CHARS,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_SUMMARY_CHARS,
    MAX_TOTAL_BYTES,
)
from skala_async.testing.sandbox._values import RecordedFile, normalise_uuid
from skala_async.webhooks import read_capped

__all__ = [
    "UNREAD_WARNING",
    "Problems",
    "drain",
    "read_form",
    "read_limited",
    "silence_aiohttp_unread_warning",
    "validate_fields",
]

_CHUNK = 2**18
_MAX_TEXT_FIELD_BYTES = 64 * 1024  # a text field is kept up to this size, then only counted
_FORM_FIELDS = ("customerId", "summary", "description")
# Every character str.splitlines() breaks on, as the client and the contract say.
_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")

# aiohttp's multipart reader calls its own deprecated `StreamReader.unread_data()` when a part
# without a Content-Length of its own (every browser's, curl's and this client's) arrives in
# uneven pieces: `BodyPartReader._read_chunk_from_stream` in aiohttp 3.14 silences the
# warning at one of its two calls only. Under warnings-as-errors (`-W error`, pytest's
# `filterwarnings = error`) the warning is raised in the middle of the read, and the sandbox
# answers 500 to a create that depends on TCP timing alone. The call is aiohttp's, not the
# caller's, so exactly that warning from that module is silenced; the pytest plugin adds the
# same filter to pytest's, which would otherwise take precedence during a test.
UNREAD_WARNING = r"unread_data\(\) is deprecated"


def silence_aiohttp_unread_warning() -> None:
    """Ignore aiohttp's own deprecation warning from its multipart reader (see above)."""
    warnings.filterwarnings(
        "ignore", message=UNREAD_WARNING, category=DeprecationWarning, module=r"aiohttp\.multipart"
    )


silence_aiohttp_unread_warning()


class Problems:
    """Collects validation problems per field, DRF style."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        messages = self.errors.setdefault(field, [])
        if message not in messages:
            messages.append(message)

    def __bool__(self) -> bool:
        return bool(self.errors)


async def read_form(
    request: web.Request, fields: dict[str, str], files: list[RecordedFile], problems: Problems
) -> None:
    """Read a create's multipart body into ``fields`` and ``files``, noting ``problems``.

    Raises ValueError (or aiohttp's parse errors) when the body cannot be parsed at all.
    """
    reader = await request.multipart()
    seen: set[str] = set()
    while True:
        try:
            part = await reader.next()
            if part is None:
                break
            if isinstance(part, aiohttp.MultipartReader):
                raise ValueError("nested multipart bodies are not supported")
            name, filename = _disposition(part.headers.get(aiohttp.hdrs.CONTENT_DISPOSITION))
        except aiohttp.multipart.BadContentDispositionHeader:
            # aiohttp warns and reads no name (in next() or in our own read of the header);
            # under warnings-as-errors (a test suite's `-W error`) the warning is raised
            # instead: the same refusal either way.
            raise ValueError("a part has no name in its Content-Disposition") from None
        if name is None:
            raise ValueError("a part has no name in its Content-Disposition")
        if filename is None and name != "files":
            await _read_field(part, name, fields, seen, problems)
        else:
            await _read_file(part, name, filename, files, problems)
    attachments = [f for f in files if f.field_name == "files"]
    if len(attachments) > MAX_FILES:
        problems.add("files", f"Ensure this field has no more than {MAX_FILES} files.")
    total = sum(f.size for f in attachments)
    if total > MAX_TOTAL_BYTES:
        problems.add(
            "files", f"The files total {total} bytes, more than {MAX_TOTAL_BYTES} allowed."
        )


async def _read_field(
    part: aiohttp.BodyPartReader,
    name: str,
    fields: dict[str, str],
    seen: set[str],
    problems: Problems,
) -> None:
    text, too_big = await _read_text(part)
    if name not in _FORM_FIELDS:
        # Another field: ignored, as Django ignores fields a form does not declare.
        if text is not None:
            fields[name] = text
        return
    if name in seen:
        problems.add(name, "This field was sent more than once.")
    seen.add(name)
    if text is None:
        problems.add(name, "Not valid text in the declared charset.")
        return
    if too_big:
        problems.add(name, "Field too large.")
    fields[name] = text


@functools.lru_cache(maxsize=256)
def _disposition(header: str | None) -> tuple[str | None, str | None]:
    """A part's name and filename, read as aiohttp's ``part.name`` and ``part.filename`` read
    them (the same two functions), once per distinct header. aiohttp parses the header anew
    for each of the two, and its parser costs about 70 µs a call (it escapes a 128-character
    class on every call): reading it once cut the sandbox's CPU per create by about 30 %."""
    _, params = aiohttp.multipart.parse_content_disposition(header)
    return (
        aiohttp.multipart.content_disposition_filename(params, "name"),
        aiohttp.multipart.content_disposition_filename(params, "filename"),
    )


async def _read_file(
    part: aiohttp.BodyPartReader,
    name: str,
    filename: str | None,
    files: list[RecordedFile],
    problems: Problems,
) -> None:
    size, digest = await _hash_part(part)
    files.append(
        RecordedFile(
            field_name=name,
            filename=filename,
            content_type=part.headers.get("Content-Type"),
            size=size,
            sha256=digest,
        )
    )
    if name != "files":
        problems.add(name, "Unexpected file field; attachments are parts named 'files'.")
        return
    label = filename if filename else f"#{sum(f.field_name == 'files' for f in files)}"
    if not filename:
        problems.add("files", f"File {label} has no filename.")
    else:
        extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if extension not in ALLOWED_EXTENSIONS:
            allowed = ", ".join(sorted(ALLOWED_EXTENSIONS))
            problems.add(
                "files",
                f"File extension '{extension}' of {label!r} is not allowed. "
                f"Allowed extensions are: {allowed}.",
            )
    if size > MAX_FILE_BYTES:
        problems.add("files", f"File {label!r} is larger than {MAX_FILE_BYTES} bytes ({size}).")


def validate_fields(fields: Mapping[str, str], problems: Problems) -> None:
    """Check the three form fields of a create against the documented rules."""
    customer_id = fields.get("customerId")
    if customer_id is None:
        problems.add("customerId", "This field is required.")
    elif normalise_uuid(customer_id) is None:
        problems.add("customerId", "Must be a valid UUID.")
    summary = fields.get("summary")
    _check_text(problems, "summary", summary, MAX_SUMMARY_CHARS)
    if summary is not None and not _LINE_BREAKS.isdisjoint(summary):
        problems.add("summary", "The summary must be a single line.")
    _check_text(problems, "description", fields.get("description"), MAX_DESCRIPTION_CHARS)


def _check_text(problems: Problems, name: str, value: str | None, limit: int) -> None:
    if value is None:
        problems.add(name, "This field is required.")
        return
    if not value.strip():
        problems.add(name, "This field may not be blank.")
    if len(value) > limit:
        problems.add(name, f"Ensure this field has no more than {limit} characters.")


async def drain(request: web.Request) -> None:
    """Read and discard what is left of a request body."""
    while await request.content.readany():
        pass


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """Read the body up to ``limit`` bytes; ``None`` (after draining) if it is longer."""
    body = await read_capped(request, limit)
    if body is None:
        await drain(request)
    return body


async def _read_text(part: aiohttp.BodyPartReader) -> tuple[str | None, bool]:
    """Read a text part, keeping at most ``_MAX_TEXT_FIELD_BYTES``; (text, too_big)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await part.read_chunk(_CHUNK)
        if not chunk:
            break
        if size < _MAX_TEXT_FIELD_BYTES:
            chunks.append(chunk[: _MAX_TEXT_FIELD_BYTES - size])
        size += len(chunk)
    too_big = size > _MAX_TEXT_FIELD_BYTES
    try:
        text = b"".join(chunks).decode(part.get_charset(default="utf-8"))
    except (UnicodeDecodeError, LookupError):
        if not too_big:
            return None, False
        text = b"".join(chunks).decode("utf-8", "replace")
    return text, too_big


async def _hash_part(part: aiohttp.BodyPartReader) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = await part.read_chunk(_CHUNK)
        if not chunk:
            return size, digest.hexdigest()
        size += len(chunk)
        digest.update(chunk)
