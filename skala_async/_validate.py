"""Draft validation: every documented limit, checked before anything is sent. No I/O.

The limits are those of reference section 4; ``_protocol.create_request`` runs
:func:`check_draft` first.
"""

from __future__ import annotations

import os
import unicodedata
import uuid

import attrs

from ._limits import (
    ALLOWED_EXTENSIONS,
    MAX_DESCRIPTION_CHARS,
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_SUMMARY_CHARS,
    MAX_TOTAL_BYTES,
    MIB,
    extension_of,
)
from .errors import ValidationError
from .models import Attachment, TicketDraft, content_type_for

__all__ = ["check_draft", "clean_filename", "validate_draft"]


_LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _text_problems(name: str, value: object, limit: int, *, one_line: bool) -> list[str]:
    if not isinstance(value, str):
        return [f"{name}: must be a string, not {type(value).__name__}"]
    problems = []
    if not value.strip():
        problems.append(f"{name}: must not be empty")
    if len(value) > limit:
        problems.append(f"{name}: must be at most {limit} characters (got {len(value)})")
    if one_line and not _LINE_BREAKS.isdisjoint(value):
        problems.append(f"{name}: must be a single line (no line breaks)")
    if "\x00" in value:
        problems.append(f"{name}: must not contain NUL characters")
    if not value.isascii() and value.encode("utf-8", "surrogatepass") != value.encode(
        "utf-8", "ignore"
    ):
        problems.append(f"{name}: must be valid Unicode text (it has a lone surrogate)")
    return problems


#: What separates directories in a path here: ``/``, and ``\\`` on Windows only (elsewhere
#: ``\\`` is an ordinary character of a file name).
_SEPARATORS = tuple({"/", os.sep, os.altsep or "/"})


def clean_filename(name: str) -> str:
    """The name to send: the last path component, without control characters.

    A path is cut at this platform's separators, so a local directory never leaves the
    machine while a file's own name (``a\\b.pdf`` on Linux) is sent whole. Names given
    with ``filename=`` were already cut at both separators when the attachment was made.
    """
    base = name
    for sep in _SEPARATORS:
        base = base.rsplit(sep, 1)[-1]
    return "".join(c for c in base if unicodedata.category(c) not in ("Cc", "Cs")).strip()


def _how_to_name(att: Attachment) -> str:
    if att.fileobj is not None:
        return 'Attachment.from_file(f, filename="receipt.pdf")'
    if att.data is not None:
        return 'Attachment.from_bytes(data, filename="receipt.pdf")'
    return 'Attachment.from_path(path, filename="receipt.pdf")'


def _fmt_size(n: int) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n} bytes"


def validate_draft(draft: TicketDraft) -> list[str]:
    """Every way ``draft`` breaks the documented limits, as sentences; empty if none.

    Limits (reference section 4): customer id a UUID; summary non-empty, one line, at most
    240 characters; description non-empty, at most 5000 characters; at most 5 files of at
    most 25 MiB each and 50 MiB together, with an allowed extension; every file readable.
    """
    problems: list[str] = []
    cid: object = draft.customer_id
    if isinstance(cid, str):
        try:
            uuid.UUID(cid.strip())
        except ValueError:
            problems.append(f"customer_id: {cid!r} is not a UUID")
    elif not isinstance(cid, uuid.UUID):
        problems.append(f"customer_id: must be a UUID string, not {type(cid).__name__}")
    problems += _text_problems("summary", draft.summary, MAX_SUMMARY_CHARS, one_line=True)
    problems += _text_problems(
        "description", draft.description, MAX_DESCRIPTION_CHARS, one_line=False
    )
    if len(draft.files) > MAX_FILES:
        problems.append(f"files: at most {MAX_FILES} attachments (got {len(draft.files)})")
    total = 0
    seen: dict[str, int] = {}
    for i, att in enumerate(draft.files):
        label = f"files[{i}]"
        name = clean_filename(att.filename)
        if att.problem:
            problems.append(f"{label}: {att.problem}")
        if not name:
            problems.append(f"{label}: needs a file name; give one with {_how_to_name(att)}")
        else:
            first = seen.setdefault(name.casefold(), i)
            if first != i:
                problems.append(
                    f"{label}: {name!r} is also the name of files[{first}] (names are "
                    "compared ignoring case); give each attachment its own name with "
                    f"{_how_to_name(att)}"
                )
            ext = extension_of(name)
            if ext not in ALLOWED_EXTENSIONS:
                allowed = " ".join(sorted(ALLOWED_EXTENSIONS))
                shown = f".{ext}" if ext else "no extension"
                problems.append(f"{label}: {name!r} has {shown}; allowed extensions are {allowed}")
        if att.size is not None:
            total += att.size
            if att.size > MAX_FILE_BYTES:
                problems.append(
                    f"{label}: {name!r} is {_fmt_size(att.size)}, over the "
                    f"{_fmt_size(MAX_FILE_BYTES)} limit per file"
                )
    if total > MAX_TOTAL_BYTES:
        problems.append(
            f"files: {_fmt_size(total)} together, over the {_fmt_size(MAX_TOTAL_BYTES)} limit"
        )
    return problems


def check_draft(draft: TicketDraft) -> None:
    """Raise :class:`ValidationError` listing every problem of ``draft``, if any."""
    problems = validate_draft(draft)
    if problems:
        raise ValidationError(problems)


# --------------------------------------------------------------------------- requests


def _with_clean_name(attachment: Attachment) -> Attachment:
    name = clean_filename(attachment.filename)
    if name == attachment.filename:
        return attachment
    return attrs.evolve(attachment, filename=name, content_type=content_type_for(name))
