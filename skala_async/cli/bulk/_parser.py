"""The ``bulk`` subcommand's arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from skala_async._waiting import DEFAULT_WAIT_TIMEOUT
from skala_async.cli._common import _positive_seconds

from ._constants import BULK_EPILOG
from ._input import delimiter_arg
from ._run import cmd_bulk


# Over 60 lines: one argument per option, each with its help, read top to bottom.
def add_parser(
    add: Callable[[str, str, list[argparse.ArgumentParser]], argparse.ArgumentParser],
    creds: argparse.ArgumentParser,
) -> None:
    """Register the ``bulk`` subcommand."""
    bulk = add("bulk", "submit many tickets from a CSV or JSONL file, crash-safely", [creds])
    bulk.epilog = BULK_EPILOG
    bulk.add_argument("input", metavar="FILE", help="CSV (with a header) or .jsonl file")
    bulk.add_argument("--format", choices=["csv", "jsonl"], help="default: by extension")
    bulk.add_argument(
        "--delimiter",
        type=delimiter_arg,
        metavar="CHAR",
        help="the CSV's delimiter: ',' ';' 'tab' '|' ... (default: told from the header line)",
    )
    bulk.add_argument(
        "--validate-only",
        action="store_true",
        help="read the whole file and list every problem by row and field; send nothing "
        "(no credentials needed; exit 0 when clean, 9 when not)",
    )
    bulk.add_argument(
        "--concurrency", type=int, default=8, metavar="N", help="creates in flight (default 8)"
    )
    bulk.add_argument(
        "--journal",
        metavar="PATH",
        help="SQLite journal for resuming (default: FILE.journal.sqlite beside the input)",
    )
    bulk.add_argument("--no-journal", action="store_true", help="keep no journal")
    bulk.add_argument(
        "--results",
        metavar="PATH",
        help="one row per input, CSV or .jsonl (default: FILE.results.csv beside the input)",
    )
    bulk.add_argument(
        "--uncertain-file",
        metavar="PATH",
        help="where the inputs that may have created a ticket are listed, CSV or .jsonl, "
        "when there are any (default: FILE.uncertain.csv beside the results)",
    )
    bulk.add_argument("--wait", action="store_true", help="also wait for CREATED or FAILED")
    bulk.add_argument(
        "--wait-timeout",
        type=_positive_seconds,
        default=DEFAULT_WAIT_TIMEOUT,
        metavar="SECONDS",
        help=f"with --wait: deadline of each wait (default {DEFAULT_WAIT_TIMEOUT:g})",
    )
    bulk.add_argument(
        "--resend-uncertain",
        action="store_true",
        help="send again inputs an earlier run may have created (see the journal)",
    )
    bulk.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when stderr is a terminal)",
    )
    bulk.set_defaults(handler=cmd_bulk)
