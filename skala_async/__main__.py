"""``python -m skala_async``: the ``skala-tickets`` command line."""

from __future__ import annotations

import sys

from skala_async.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m skala_async"))
