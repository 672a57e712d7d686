"""``skala-tickets bulk FILE``: submit a CSV or JSONL export, with a journal and a report.

Input columns (CSV header or JSON keys): ``customer_id`` (or ``customerId``), ``summary``,
``description``, optional ``attachments`` (CSV: paths separated by ``;``; JSON: a list or a
string) and optional ``reference``. Relative attachment paths are taken relative to the
input file's folder (a missing file's problem names the path tried). Rows are read lazily:
a file of 100,000 rows never sits in memory. A CSV's delimiter (comma, semicolon, tab or
vertical bar) is told from its header line unless ``--delimiter`` gives it.

``--validate-only`` reads the whole file and lists every problem of every row (by row and
field), sending nothing and asking for no token.

By default a journal is kept beside the input (``FILE.journal.sqlite``), so running the same
command again after an interruption continues where it stopped: inputs already accepted are
not sent again, and inputs that were in flight are reported ``uncertain`` unless
``--resend-uncertain`` is given. A results file gets one row per input as it finishes, and
the inputs whose outcome is ``uncertain`` are listed at the end in an uncertain file
(customer, summary, reference, when sent, why): what to check with Ripio.

A row that cannot be read (not JSON, a number or nesting the parser refuses, a field of
the wrong type, a CSV field over the csv module's limit, more fields than the header) is
that row's ``rejected`` result; a file that cannot be read at all (not UTF-8, a quoted CSV
field that never closes) is a usage error before anything is sent. The journal is locked
for the whole run, and the files the command writes must not be the input or the journal.
"""

from __future__ import annotations

from ._constants import (
    BULK_EPILOG,
    EXIT_CANNOT_WRITE,
    EXIT_INVALID_INPUT,
    EXIT_JOURNAL_IN_USE,
    EXIT_JOURNAL_LOST,
    RESULT_FIELDS,
)
from ._input import InputError, RowError, count_rows, detect_delimiter, read_inputs, read_rows
from ._parser import add_parser
from ._progress import BulkProgress, Tally
from ._results import UNCERTAIN_FIELDS, UncertainInput, journal_sent_at, write_uncertain
from ._run import cmd_bulk
from ._validate import Problem, _field_problems, validate_file

__all__ = [
    "BULK_EPILOG",
    "EXIT_CANNOT_WRITE",
    "EXIT_INVALID_INPUT",
    "EXIT_JOURNAL_IN_USE",
    "EXIT_JOURNAL_LOST",
    "RESULT_FIELDS",
    "UNCERTAIN_FIELDS",
    "BulkProgress",
    "InputError",
    "Problem",
    "RowError",
    "Tally",
    "UncertainInput",
    "_field_problems",
    "add_parser",
    "cmd_bulk",
    "count_rows",
    "detect_delimiter",
    "journal_sent_at",
    "read_inputs",
    "read_rows",
    "validate_file",
    "write_uncertain",
]
