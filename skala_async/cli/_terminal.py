"""Text for a terminal: what a server or a file says cannot act on it; log lines."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    pass


#: Terminal escape sequences, whole: CSI (``ESC [ ... m``, also its one-byte C1 form),
#: OSC (``ESC ] ... BEL`` or ``ESC \``: window titles, hyperlinks, clipboard), DCS, SOS,
#: PM and APC strings, and two-character escapes (``ESC c`` resets the terminal).
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
#: Characters a terminal acts on rather than shows: C0 and C1 controls, DEL, and the
#: bidirectional overrides, embeddings, isolates and marks that reorder what is shown
#: (and the Unicode line and paragraph separators).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
_CONTROL_BUT_NEWLINE = re.compile(
    "[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)


def terminal_safe(text: str, *, newlines: bool = False) -> str:
    """``text`` without anything a terminal would act on: escape sequences, control
    characters and bidi controls are removed (a tab becomes a space). Every line of human
    output goes through it, since server-supplied text (issue keys, statuses, error
    messages) must not retitle, clear or reorder the user's terminal. ``newlines=True``
    keeps line breaks (a logged traceback)."""
    text = _ESCAPE_SEQUENCE.sub("", text).replace("\t", " ")
    return (_CONTROL_BUT_NEWLINE if newlines else _CONTROL).sub("", text)


class _SafeFormatter(logging.Formatter):
    """Log lines for a terminal: server text in a message cannot act on it."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_safe(super().format(record), newlines=True)


def log_to(stream: TextIO, name: str, level: int, fmt: str) -> Callable[[], None]:
    """Send logger ``name``'s records at ``level`` and above to ``stream``; returns undo."""
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_SafeFormatter(fmt))
    handler.setLevel(level)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(previous)

    return undo


def _verbose_logging(enabled: bool, prog: str) -> Callable[[], None]:
    """Send ``skala_async`` DEBUG logs to stderr (without ``-v``: warnings only, one line
    each, as Python's last-resort handler would, but through :func:`terminal_safe`);
    returns the undo function."""
    from skala_async._logging import env_handler_installed

    if env_handler_installed():
        # SKALA_LOG already logs to stderr at its level: -v only lowers it to DEBUG.
        if not enabled:
            return lambda: None
        logger = logging.getLogger("skala_async")
        previous = logger.level
        logger.setLevel(logging.DEBUG)
        return lambda: logger.setLevel(previous)
    if not enabled:
        return log_to(sys.stderr, "skala_async", logging.WARNING, f"{prog}: %(message)s")
    return log_to(
        sys.stderr, "skala_async", logging.DEBUG, "%(asctime)s %(name)s %(levelname)s %(message)s"
    )
