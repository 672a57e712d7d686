"""The ``bulk`` command's help epilog, exit codes and results columns."""

from __future__ import annotations

from skala_async.bulk import RECORD_FIELDS

BULK_EPILOG = """\
input: CSV (with a header) or JSON Lines, one ticket per row, with the columns customer_id,
  summary, description, and optionally attachments (CSV: 'a.pdf;b.png') and reference.
  A CSV may be separated by commas, semicolons, tabs or vertical bars: the header line
  tells which (--delimiter to say it). Relative attachment paths are read from the input
  file's folder.

outputs: FILE.results.csv (one row per input) and, when some inputs are uncertain,
  FILE.uncertain.csv beside it: those inputs with their customer, summary, reference, when
  they were sent and why, to check with Ripio (then --resend-uncertain sends them again).

exit codes (bulk):
  0    every input was created (with --wait: and none ended FAILED)
  1    with --wait: some tickets ended FAILED
  2    usage error (unreadable input file, missing columns)
  3    some inputs were rejected (validation or a 4xx; see the results file)
  4    some inputs are uncertain or failed (see the results file; rerun to continue)
  5    with --wait: some created tickets had no final status when their wait ended
  6    the journal is in use by another run (nothing was sent)
  7    the journal or the results file cannot be used or written: not a journal, a
       read-only folder, a full disk, a results file deleted during the run (nothing
       more was sent; the message says what to do)
  8    the journal was deleted, replaced or truncated during the run: what it recorded
       is lost; check with Ripio which tickets exist before sending anything again
  9    with --validate-only: the file has problems (each one is listed; nothing was sent)
  130  interrupted: rerun the same command to continue from the journal (the counts so
       far are printed)
"""

EXIT_JOURNAL_IN_USE = 6
EXIT_CANNOT_WRITE = 7
EXIT_JOURNAL_LOST = 8
EXIT_INVALID_INPUT = 9

#: The results file's columns: the records' fields, with the error as one text.
RESULT_FIELDS = [
    *RECORD_FIELDS[: RECORD_FIELDS.index("error_type")],
    "error",
    *RECORD_FIELDS[RECORD_FIELDS.index("error_code") + 1 :],
]
