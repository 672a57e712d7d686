"""The OpenAPI document of the contract: loading it, finding operations, and validating
values against its schemas (``openapi-schema-validator``, imported on first use)."""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from typing import Any, NamedTuple, Protocol

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
    text = resources.files("skala_async.testing").joinpath(DOCUMENT_NAME).read_text("utf-8")
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
