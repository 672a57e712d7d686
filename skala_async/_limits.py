"""The documented limits of the create-ticket endpoint, in one place.

Source: the Create Support Ticket page (reference section 4). The page says "MB";
we read it as MiB (2**20 bytes), the unit Django and most upload stacks use, so a
file the server accepts is never refused here. The sandbox enforces the same numbers.
"""

from __future__ import annotations

MAX_SUMMARY_CHARS = 240
MAX_DESCRIPTION_CHARS = 5000
MAX_FILES = 5
MIB = 1024 * 1024
MAX_FILE_BYTES = 25 * MIB
MAX_TOTAL_BYTES = 50 * MIB
ALLOWED_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "mp4", "mov", "avi", "webm", "pdf"})
CONTENT_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "avi": "video/x-msvideo",
    "webm": "video/webm",
    "pdf": "application/pdf",
}


def extension_of(filename: str) -> str:
    """The lower-case extension of ``filename`` (``""`` for none, and for ``".pdf"``)."""
    stem, dot, ext = filename.rpartition(".")
    return ext.lower() if dot and stem else ""


#: Error code the API returns (with HTTP 403) while support tickets are not enabled.
SUPPORT_TICKETS_NOT_ENABLED_CODE = 20061

CREATE_PATH = "/api/v1/supportTickets/"
TICKET_PATH = "/api/v1/supportTickets/{ticket_id}/"
TOKEN_PATH = "/oauth2/token/"  # noqa: S105 - a path, not a secret
