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

import base64
import binascii
import copy
import functools
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, NamedTuple, Protocol

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

#: The file name of the OpenAPI document inside ``skala_async.testing``.
DOCUMENT_NAME = "openapi.json"
_BASE_URI = "urn:skala-async:openapi"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class ContractViolation(AssertionError):
    """A request, response or webhook that breaks the OpenAPI contract.

    ``problems`` lists every finding, one sentence each; ``str()`` shows them all.
    """

    def __init__(
        self,
        kind: str,
        method: str,
        path: str,
        problems: Sequence[str],
        *,
        status: int | None = None,
    ) -> None:
        self.kind = kind
        self.method = method
        self.path = path
        self.status = status
        self.problems = tuple(problems)
        where = f"{method} {path}" + (f" -> {status}" if status is not None else "")
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{kind} breaks the API contract ({where}):\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.kind, self.method, self.path, self.problems, self.status))


def _rebuild(
    kind: str, method: str, path: str, problems: Sequence[str], status: int | None
) -> ContractViolation:
    return ContractViolation(kind, method, path, problems, status=status)


class FilePart(Protocol):
    """A file part of a multipart body (``RecordedFile`` has these attributes)."""

    @property
    def field_name(self) -> str: ...
    @property
    def filename(self) -> str | None: ...
    @property
    def size(self) -> int: ...


class Operation(NamedTuple):
    """One operation of the document."""

    method: str
    #: The path template, e.g. ``"/api/v1/supportTickets/{ticketId}/"``.
    path: str
    operation_id: str
    #: JSON pointer of the operation object inside the document.
    pointer: str
    pattern: re.Pattern[str]


# --------------------------------------------------------------------------------------------
# The document


@functools.cache
def _document() -> dict[str, Any]:
    text = resources.files(__package__).joinpath(DOCUMENT_NAME).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def document() -> dict[str, Any]:
    """The OpenAPI document, parsed (a fresh copy: change it freely)."""
    return copy.deepcopy(_document())


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _resolve(obj: Any) -> Any:
    """Follow ``$ref`` objects (all local, ``#/components/...``) to a plain object."""
    while isinstance(obj, dict) and "$ref" in obj:
        obj = _pointer_get(obj["$ref"][1:])
    return obj


def _pointer_get(pointer: str) -> Any:
    target: Any = _document()
    for token in pointer.lstrip("/").split("/") if pointer.strip("/") else []:
        key = token.replace("~1", "/").replace("~0", "~")
        target = target[int(key)] if isinstance(target, list) else target[key]
    return target


@functools.cache
def _operations() -> tuple[Operation, ...]:
    found = []
    for path, item in _document().get("paths", {}).items():
        regex = "".join(
            f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part)
            for part in re.split(r"(\{[^}/]+\})", path)
        )
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    operation_id=op.get("operationId", f"{method} {path}"),
                    pointer=f"/paths/{_escape(path)}/{method}",
                    pattern=re.compile(regex + r"\Z"),
                )
            )
    return tuple(found)


def find_operation(method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
    """The operation ``method path`` belongs to and its path parameters, or ``None``."""
    method = method.upper()
    for op in _operations():
        if op.method == method:
            match = op.pattern.match(path)
            if match:
                return op, match.groupdict()
    return None


# --------------------------------------------------------------------------------------------
# Schema validation


@functools.cache
def _registry() -> Any:
    from referencing import Registry
    from referencing.jsonschema import DRAFT202012

    return Registry().with_resource(_BASE_URI, DRAFT202012.create_resource(_document()))


@functools.lru_cache(maxsize=256)
def _validator(pointer: str) -> Any:
    """A validator for the schema at ``pointer`` (a JSON pointer into the document)."""
    from openapi_schema_validator import OAS31Validator, oas31_format_checker

    schema = {"$ref": f"{_BASE_URI}#{pointer}"}
    return OAS31Validator(schema, registry=_registry(), format_checker=oas31_format_checker)


def _schema_problems(
    pointer: str,
    instance: Any,
    what: str,
    *,
    tolerate: Callable[[Any], bool] | None = None,
) -> list[str]:
    problems = []
    errors = sorted(_validator(pointer).iter_errors(instance), key=lambda e: list(e.path))
    for error in errors:
        if tolerate is not None and tolerate(error):
            continue
        location = "".join(f"/{p}" for p in error.absolute_path) or "/"
        message = error.message
        if error.validator == "not":  # {"not": {"pattern": ...}}: a forbidden character
            forbidden = error.validator_value.get("pattern", error.validator_value)
            message = f"{error.instance!r} must not match {forbidden!r}"
        problems.append(f"{what} at {location}: {message}")
    return list(dict.fromkeys(problems))


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _get_header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None


def _header_problems(
    params: Iterable[Mapping[str, Any]], headers: Mapping[str, str], pointer: str
) -> list[str]:
    problems = []
    for index, param in enumerate(params):
        param = _resolve(param)
        if param.get("in") != "header":
            continue
        name = param["name"]
        value = _get_header(headers, name)
        if value is None:
            if param.get("required"):
                problems.append(f"header {name} is required")
            continue
        if "schema" in param:
            problems += _schema_problems(f"{pointer}/{index}/schema", value, f"header {name}")
    return problems


def _security_problems(op_pointer: str, headers: Mapping[str, str]) -> list[str]:
    op = _pointer_get(op_pointer)
    requirements = op.get("security", _document().get("security", []))
    if not requirements:
        return []
    schemes = _document().get("components", {}).get("securitySchemes", {})
    authorization = _get_header(headers, "Authorization")
    reasons = []
    for requirement in requirements:
        failed = [
            reason
            for name in requirement
            if (reason := _scheme_problem(schemes.get(name, {}), authorization))
        ]
        if not failed:
            return []
        reasons += failed
    return ["security: " + "; ".join(dict.fromkeys(reasons))]


def _scheme_problem(scheme: Mapping[str, Any], authorization: str | None) -> str | None:
    if scheme.get("type") != "http":
        return None  # only HTTP schemes are used in this document
    expected = str(scheme.get("scheme", "")).lower()
    if authorization is None:
        return f"no Authorization header ({expected} expected)"
    sent, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if sent.lower() != expected:
        return f"Authorization scheme {sent!r}, {expected} expected"
    if not credentials:
        return f"empty {expected} credentials"
    if expected == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "basic credentials are not base64 of UTF-8 text"
        if ":" not in decoded:
            return "basic credentials are not 'id:secret'"
    return None


def _status_key(responses: Mapping[str, Any], status: int) -> str | None:
    for key in (str(status), f"{status // 100}XX", "default"):
        if key in responses:
            return key
    return None


# --------------------------------------------------------------------------------------------
# Requests


def _binary(schema: Mapping[str, Any]) -> bool:
    return (
        schema.get("contentMediaType") == "application/octet-stream"
        or schema.get("format") == "binary"
    )


def _multipart_instance(
    schema: Mapping[str, Any], fields: Mapping[str, str], files: Sequence[FilePart]
) -> tuple[dict[str, Any], list[str]]:
    properties = _resolve(schema).get("properties", {})
    instance: dict[str, Any] = dict(fields)
    problems = []
    for part in files:
        name = part.field_name
        prop = _resolve(properties.get(name, {}))
        value = part.filename or ""
        if prop.get("type") == "array" and _binary(_resolve(prop.get("items", {}))):
            instance.setdefault(name, []).append(value)
        else:
            problems.append(f"body: part {name!r} is sent as a file but is not a file field")
    return instance, problems


def _limit_problems(limits: Mapping[str, Any], files: Sequence[FilePart]) -> list[str]:
    problems = []
    allowed = {str(e).lower() for e in limits.get("allowedExtensions", ())}
    max_file = limits.get("maxFileBytes")
    max_total = limits.get("maxTotalBytes")
    total = 0
    for part in files:
        total += part.size
        name = part.filename
        if not name:
            problems.append(f"body: file part {part.field_name!r} has no filename")
        elif allowed:
            extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if extension not in allowed:
                problems.append(f"body: file {name!r} has extension {extension!r}, not allowed")
        if max_file is not None and part.size > max_file:
            problems.append(f"body: file {name!r} is {part.size} bytes, over {max_file}")
    if max_total is not None and total > max_total:
        problems.append(f"body: files total {total} bytes, over {max_total}")
    return problems


def _request_problems(
    op: Operation,
    params: Mapping[str, str],
    headers: Mapping[str, str],
    form: Mapping[str, str] | None,
    fields: Mapping[str, str] | None,
    files: Sequence[FilePart],
) -> list[str]:
    problems: list[str] = []
    spec = _pointer_get(op.pointer)
    for index, param in enumerate(spec.get("parameters", [])):
        param = _resolve(param)
        if param.get("in") == "path" and param["name"] in params:
            problems += _schema_problems(
                f"{op.pointer}/parameters/{index}/schema",
                params[param["name"]],
                f"path parameter {param['name']}",
            )
    problems += _header_problems(spec.get("parameters", []), headers, f"{op.pointer}/parameters")
    problems += _security_problems(op.pointer, headers)
    body = spec.get("requestBody")
    if body is None:
        return problems
    body = _resolve(body)
    content_type = _media_type(_get_header(headers, "Content-Type"))
    if content_type not in body.get("content", {}):
        documented = ", ".join(body.get("content", {}))
        problems.append(f"Content-Type {content_type or '(none)'!r}, expected {documented}")
        return problems
    media = body["content"][content_type]
    pointer = f"{op.pointer}/requestBody/content/{_escape(content_type)}/schema"
    if content_type == "multipart/form-data":
        instance, part_problems = _multipart_instance(media["schema"], fields or {}, files)
        problems += part_problems
        problems += _limit_problems(media.get("x-skala-limits", {}), files)
    else:
        instance = dict(form if form is not None else fields or {})
    problems += _schema_problems(pointer, instance, "body")
    return list(dict.fromkeys(problems))


def check_request(
    method: str,
    path: str,
    headers: Mapping[str, str],
    *,
    form: Mapping[str, str] | None = None,
    fields: Mapping[str, str] | None = None,
    files: Sequence[FilePart] = (),
) -> None:
    """Raise :class:`ContractViolation` unless the request conforms to the contract.

    ``form`` is a decoded ``application/x-www-form-urlencoded`` body; ``fields`` and
    ``files`` are the text fields and file parts of a ``multipart/form-data`` body.
    """
    found = find_operation(method, path)
    if found is None:
        raise ContractViolation("request", method, path, ["no such operation in the contract"])
    op, params = found
    problems = _request_problems(op, params, headers, form, fields, files)
    if problems:
        raise ContractViolation("request", method, path, problems)


# --------------------------------------------------------------------------------------------
# Responses


def _status_tolerance(statuses: Collection[str]) -> Callable[[Any], bool] | None:
    """Accept a ticket status outside the documented enum when it is in ``statuses``
    (and the webhook event type ``SUPPORT_TICKET.<status>`` of such a status)."""
    if not statuses:
        return None
    event_types = {f"SUPPORT_TICKET.{status}" for status in statuses}

    def tolerate(error: Any) -> bool:
        path = list(error.absolute_path)
        if error.validator != "enum" or not path:
            return False
        if path[-1] == "status":
            return error.instance in statuses
        return path[-1] == "eventType" and error.instance in event_types

    return tolerate


def _response_problems(
    op: Operation,
    status: int,
    headers: Mapping[str, str],
    body: bytes | None,
    tolerated_statuses: Collection[str],
) -> list[str]:
    responses = _pointer_get(op.pointer).get("responses", {})
    key = _status_key(responses, status)
    if key is None:
        return [f"status {status} is not documented (documented: {', '.join(responses)})"]
    pointer = f"{op.pointer}/responses/{_escape(key)}"
    response = responses[key]
    while "$ref" in response:  # follow to components/responses and keep the pointer right
        pointer = response["$ref"][1:]
        response = _pointer_get(pointer)
    problems = []
    for name, header in response.get("headers", {}).items():
        header = _resolve(header)
        value = _get_header(headers, name)
        if value is None:
            if header.get("required"):
                problems.append(f"header {name} is required")
        elif "schema" in header:
            target = f"{pointer}/headers/{_escape(name)}"
            while "$ref" in _pointer_get(target):
                target = _pointer_get(target)["$ref"][1:]
            problems += _schema_problems(f"{target}/schema", value, f"header {name}")
    content = response.get("content")
    if not content:
        return problems
    content_type = _media_type(_get_header(headers, "Content-Type"))
    if content_type not in content:
        problems.append(f"Content-Type {content_type or '(none)'!r}, expected {', '.join(content)}")
        return problems
    if body is None:
        return problems
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        problems.append("body is not JSON")
        return problems
    schema_pointer = f"{pointer}/content/{_escape(content_type)}/schema"
    problems += _schema_problems(
        schema_pointer, data, "body", tolerate=_status_tolerance(tolerated_statuses)
    )
    if status >= 400 and isinstance(data, dict) and data.get("status", status) != status:
        problems.append(f"body: status {data.get('status')!r} does not repeat the HTTP status")
    return problems


def check_response(
    method: str,
    path: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    tolerated_statuses: Collection[str] = (),
) -> None:
    """Raise :class:`ContractViolation` unless the response conforms to the contract.

    ``method`` and ``path`` are the request's. ``body=None`` checks status and headers
    only. ``tolerated_statuses`` are ticket statuses outside the documented enum that are
    accepted anyway (a sandbox told to emit one, to test a forward-compatible client).
    """
    found = find_operation(method, path)
    if found is None:
        raise ContractViolation(
            "response", method, path, ["no such operation in the contract"], status=status
        )
    problems = _response_problems(found[0], status, headers, body, tolerated_statuses)
    if problems:
        raise ContractViolation("response", method, path, problems, status=status)


# --------------------------------------------------------------------------------------------
# Webhooks


def check_webhook(
    headers: Mapping[str, str],
    body: bytes,
    *,
    event: str = "supportTicketEvent",
    secret: str | None = None,
    tolerated_statuses: Collection[str] = (),
) -> None:
    """Raise :class:`ContractViolation` unless a webhook delivery conforms to the contract.

    With ``secret``, the signature header must also be the right HMAC of ``body``.
    """
    pointer = f"/webhooks/{_escape(event)}/post"
    spec = _pointer_get(pointer)
    problems = _header_problems(spec.get("parameters", []), headers, f"{pointer}/parameters")
    content = _resolve(spec["requestBody"])["content"]
    content_type = _media_type(_get_header(headers, "Content-Type"))
    if content_type not in content:
        problems.append(f"Content-Type {content_type or '(none)'!r}, expected {', '.join(content)}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        problems.append("body is not JSON")
    else:
        problems += _schema_problems(
            f"{pointer}/requestBody/content/application~1json/schema",
            data,
            "body",
            tolerate=_status_tolerance(tolerated_statuses),
        )
        compact = json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode("ascii")
        if body != compact:
            problems.append("body is not compact, ASCII-escaped JSON")
    if secret is not None:
        for param in spec.get("parameters", []):
            param = _resolve(param)
            if param.get("in") != "header":
                continue
            value = _get_header(headers, param["name"])
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            if value is not None and not hmac.compare_digest(value, "sha256=" + digest):
                problems.append(f"header {param['name']} is not the HMAC-SHA256 of the body")
    if problems:
        raise ContractViolation("webhook", "POST", f"(webhook {event})", problems)


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
