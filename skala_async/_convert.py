"""The one cattrs converter: camelCase wire names, forgiving enums, strict UUIDs.

Models never import cattrs; everything that turns JSON into models goes through
:data:`converter` here. Unknown keys are ignored (the API may add fields), a missing
required key or a wrong type is an error that ``_protocol`` turns into an
:class:`~skala_async.errors.UnexpectedResponseError`.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from .models import Ticket, TicketStatus

T = TypeVar("T")

_CAMEL = re.compile(r"_([a-z])")


def to_camel(name: str) -> str:
    """``ticket_id`` -> ``ticketId``."""
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


def _structure_uuid(value: Any, _: type) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str):
        raise TypeError(f"expected a UUID string, got {type(value).__name__}")
    return uuid.UUID(value)


def _structure_status(value: Any, _: type) -> TicketStatus:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a status string, got {value!r}")
    return TicketStatus(value)


def _structure_optional_str(value: Any, _: type) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"expected a string or null, got {type(value).__name__}")


def _structure_str(value: Any, _: type) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _structure_int(value: Any, _: type) -> int:
    # JSON booleans are ints in Python; a token lifetime of `true` is not a number.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def make_converter() -> cattrs.Converter:
    """Build the converter (a function so tests can make a fresh one)."""
    conv = cattrs.Converter(forbid_extra_keys=False)
    conv.register_structure_hook(uuid.UUID, _structure_uuid)
    conv.register_unstructure_hook(uuid.UUID, str)
    conv.register_structure_hook(TicketStatus, _structure_status)
    conv.register_unstructure_hook(TicketStatus, lambda s: s.value)
    conv.register_structure_hook(str, _structure_str)
    conv.register_structure_hook(int, _structure_int)
    conv.register_structure_hook(str | None, _structure_optional_str)

    def renames(cls: type[Any]) -> dict[str, Any]:
        return {a.name: override(rename=to_camel(a.name)) for a in attrs.fields(cls)}

    def structure_factory(cls: type[Any]) -> Any:
        return make_dict_structure_fn(cls, conv, **renames(cls))

    def unstructure_factory(cls: type[Any]) -> Any:
        return make_dict_unstructure_fn(cls, conv, **renames(cls))

    conv.register_structure_hook_factory(attrs.has, structure_factory)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_factory)
    return conv


converter = make_converter()


def structure(data: Any, cls: type[T]) -> T:
    """Structure ``data`` into ``cls`` with the package converter."""
    return converter.structure(data, cls)


def unstructure(obj: Any) -> Any:
    """Unstructure ``obj`` into camelCase JSON-ready data."""
    return converter.unstructure(obj)


__all__ = ["Ticket", "converter", "make_converter", "structure", "to_camel", "unstructure"]
