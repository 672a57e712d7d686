"""Checks of single requests, responses and webhook deliveries against the contract."""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from skala_async.testing._contract._document import (
    ContractViolation,
    FilePart,
    Operation,
    _document,
    _escape,
    _get_header,
    _media_type,
    _pointer_get,
    _resolve,
    _schema_problems,
    find_operation,
)
from skala_async.webhooks import sign_payload


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
            expected = sign_payload(body, secret)
            if value is not None and not hmac.compare_digest(value, expected):
                problems.append(f"header {param['name']} is not the HMAC-SHA256 of the body")
    if problems:
        raise ContractViolation("webhook", "POST", f"(webhook {event})", problems)
