"""The API contract: ``openapi.json`` beside this module, and checks against it.

``openapi.json`` is an OpenAPI 3.1 document of the token, create and retrieve operations and
of the support ticket webhook, written from the API reference. This module checks single
exchanges against it:

- :func:`check_request` and :func:`check_response` raise :class:`ContractViolation` (an
  :class:`AssertionError`) listing every way a request or a response breaks the contract;
- :func:`check_webhook` does the same for a webhook delivery;
- :func:`check_exchange` applies the sandbox's rules (a request the sandbox accepted with a
  2xx must conform; every answer must conform, except injected faults with a body of their
  own, such as the HTML page of a 502 from a proxy) and returns the violations instead of
  raising. :class:`~skala_async.testing.SkalaSandbox` calls it for every request when
  ``SkalaSandbox.contract_checks`` is true (or ``SKALA_SANDBOX_CONTRACT=1``), keeps the
  violations in ``sandbox.contract_violations`` and here, for :func:`take_violations`.

Bodies are checked with ``openapi-schema-validator`` (JSON Schema 2020-12 with the OpenAPI
formats), imported on first use: it is in the ``test`` extra, not a runtime dependency. A
multipart body is checked as the fields and file parts the sandbox already parsed, not as
raw bytes. What JSON Schema cannot say (file sizes, file name extensions) is read from the
``x-skala-limits`` extension of the create request body and checked here too.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence

from skala_async.testing._contract._checks import (
    _request_problems,
    _response_problems,
    _status_key,
    check_request,
    check_response,
    check_webhook,
)
from skala_async.testing._contract._document import (
    DOCUMENT_NAME,
    ContractViolation,
    FilePart,
    Operation,
    _get_header,
    _media_type,
    _pointer_get,
    document,
    find_operation,
)

__all__ = [
    "DOCUMENT_NAME",
    "ContractViolation",
    "Operation",
    "check_exchange",
    "check_request",
    "check_response",
    "check_webhook",
    "document",
    "find_operation",
    "take_violations",
]


# --------------------------------------------------------------------------------------------
# The sandbox's rules, and the record of what it found

_lock = threading.Lock()
_violations: list[ContractViolation] = []


def check_exchange(
    *,
    method: str,
    path: str,
    request_headers: Mapping[str, str],
    fields: Mapping[str, str],
    files: Sequence[FilePart],
    status: int,
    response_headers: Mapping[str, str],
    body: bytes | None,
    injected: bool = False,
    custom_body: bool = False,
    tolerated_statuses: Collection[str] = (),
) -> list[ContractViolation]:
    """Check one exchange the sandbox had, by its rules; return (and record) the violations.

    - A request outside the document's operations (wrong path or method) is not checked.
    - A request answered with 2xx must conform: the sandbox must not accept bad input.
      Requests it rejects are not checked (tests send bad input on purpose).
    - The answer must conform for its status. An injected fault (``injected``) is exempt
      when it has a body of its own (``custom_body``), is not JSON (a proxy's HTML page)
      or has a status the operation does not document.

    ``fields`` are the urlencoded form (token) or the multipart text fields (create).
    A check that cannot run (``openapi-schema-validator`` missing, say) is a violation too,
    never an exception: the sandbox answers as it would have.
    """
    violations = []
    try:
        found = find_operation(method, path)
        if found is None:
            return []
        op, params = found
        if 200 <= status < 300:
            problems = _request_problems(op, params, request_headers, fields, fields, files)
            if problems:
                violations.append(ContractViolation("request", method, path, problems))
        exempt = injected and (
            custom_body
            or _media_type(_get_header(response_headers, "Content-Type")) != "application/json"
            or _status_key(_pointer_get(op.pointer).get("responses", {}), status) is None
        )
        if not exempt:
            problems = _response_problems(op, status, response_headers, body, tolerated_statuses)
            if problems:
                violations.append(
                    ContractViolation("response", method, path, problems, status=status)
                )
    except Exception as exc:
        problem = f"the contract check could not run: {type(exc).__name__}: {exc}"
        if isinstance(exc, ImportError):
            problem += " (it needs the test extra: pip install 'skala-async[test]')"
        violations.append(ContractViolation("check", method, path, [problem], status=status))
    if violations:
        with _lock:
            _violations.extend(violations)
    return violations


def take_violations() -> list[ContractViolation]:
    """Every violation :func:`check_exchange` found since the last call, and forget them."""
    with _lock:
        found = list(_violations)
        _violations.clear()
    return found
