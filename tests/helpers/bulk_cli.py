"""``skala-tickets`` run as its own process by the bulk journal tests (not a test module).

Usage: python -m tests.helpers.bulk_cli [--no-lock] [--file-size-limit BYTES] ARGS...

``--no-lock`` takes the journal's file lock away, to show that the conditional claims
alone keep two runs from sending an input twice. ``--file-size-limit`` caps the size of
every file the process writes (``RLIMIT_FSIZE``; Python ignores SIGXFSZ, so a write past it
fails with EFBIG): a full disk, without mounting anything. The cap is lifted before the
process exits, so coverage can still save its data.
"""

from __future__ import annotations

import resource
import sys

from skala_async import _journal
from skala_async.cli import main


def run(argv: list[str]) -> int:
    limit: int | None = None
    while argv and argv[0] in ("--no-lock", "--file-size-limit"):
        if argv[0] == "--no-lock":
            _journal.fcntl = None  # type: ignore[assignment]
            argv = argv[1:]
        else:
            limit, argv = int(argv[1]), argv[2:]
    if limit is None:
        return main(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        return main(argv)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
