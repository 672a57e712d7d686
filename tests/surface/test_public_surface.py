"""The public surface: every exported name exists and is documented, every type a public
function takes or returns is exported somewhere, and the blocking facade has a twin of every
public method of the async client and handle with the same parameters.

Annotations are compared as written (the package uses ``from __future__ import
annotations``), so a parameter whose type changes on one side only fails here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import griffe
import pytest

import skala_async
import skala_async.sync as sync
from skala_async import SkalaClient, TicketHandle

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "skala_async"
#: The modules the API reference renders (``::: module`` in docs/reference).
PUBLIC_MODULES = [
    "skala_async",
    "skala_async.bulk",
    "skala_async.bus",
    "skala_async.redis",
    "skala_async.sync",
    "skala_async.testing",
    "skala_async.webhooks",
]

#: Async methods with no blocking twin, and why.
ASYNC_ONLY = {
    # An aiohttp handler to mount on the caller's own web application: it runs on the
    # caller's event loop, which the blocking client never uses.
    "webhook_handler",
    # ``async with``: the blocking client is a plain ``with`` block (__enter__/__exit__).
    "__aenter__",
    "__aexit__",
}
#: Async methods that take ``**kwargs`` and pass them on: their twins name the parameters
#: of the method they pass them to.
FORWARDS = {"from_env": "__init__", "create_many": "submit_many"}


def _directives() -> set[str]:
    text = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs").rglob("*.md"))
    return set(re.findall(r"^::: ([\w.]+)\s*$", text, re.MULTILINE))


def test_every_public_module_is_rendered_by_the_api_reference() -> None:
    assert set(PUBLIC_MODULES) <= _directives()


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_is_sorted_unique_and_every_name_exists_and_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    names = list(module.__all__)
    assert len(names) == len(set(names)), "duplicates in __all__"
    # ruff's order (RUF022): constants, then classes, then functions and the rest.
    assert names == sorted(names, key=lambda n: (not n.isupper(), not n[:1].isupper(), n))
    loaded = griffe.load(module_name, search_paths=[str(ROOT)], resolve_aliases=True)
    undocumented = []
    for name in names:
        assert hasattr(module, name), f"{module_name}.{name} is in __all__ but missing"
        if name != "__version__" and not _documented(loaded[name]):
            undocumented.append(name)
    assert not undocumented, f"{module_name}: nothing for the API reference to show"


def _documented(member: Any) -> bool:
    """A docstring of its own, or for a constant a ``#:`` comment right above it."""
    target = member.final_target if member.is_alias else member
    if target.docstring is not None and target.docstring.value.strip():
        return True
    if not target.is_attribute or target.lineno is None:
        return False
    lines = Path(target.filepath).read_text(encoding="utf-8").splitlines()
    return lines[target.lineno - 2].lstrip().startswith("#:")


def _defined_types() -> dict[str, str]:
    """Public classes and type aliases defined anywhere in the package: name -> module."""
    found: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                # An alias of a type (CapWords), not a constant or a TypeVar.
                names = [n for n in names if re.fullmatch(r"[A-Z][a-z]\w*", n)]
                if isinstance(node.value, ast.Call):
                    names = []
            else:
                continue
            for name in names:
                if not name.startswith("_") and "testing" not in module.split(".")[1:2]:
                    found.setdefault(name, module)
    return found


#: Public signatures that name a private type, and why that is right.
PRIVATE_ON_PURPOSE = {
    # Handles are made by the client (and the blocking client), never by the caller.
    "TicketHandle.__init__",
    "SyncTicketHandle.__init__",
    # The CLI passes the journal it opened; users pass a path (the documented form).
    "submit_many",
}


def _public_callables() -> Iterator[tuple[str, Callable[..., Any]]]:
    """Every public function and public method (properties' getters included) of what the
    public modules export."""
    for module_name in PUBLIC_MODULES:
        if module_name == "skala_async.testing":
            continue  # test helpers: they take the package's own types, exported above
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if attr.startswith("_") and attr != "__init__":
                        continue
                    if isinstance(value, property) and value.fget is not None:
                        yield f"{name}.{attr}", value.fget
                    elif isinstance(value, (classmethod, staticmethod)):
                        yield f"{name}.{attr}", value.__func__
                    elif inspect.isfunction(value):
                        yield f"{name}.{attr}", value
            elif inspect.isfunction(obj):
                yield name, obj


def _names_in(annotation: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(annotation, mode="eval")):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names |= _names_in(node.value)
    return names


def test_every_type_a_public_function_takes_or_returns_is_exported() -> None:
    defined = _defined_types()
    exported = {name for m in PUBLIC_MODULES for name in importlib.import_module(m).__all__} | {
        "SkalaClient",
        "Sandbox",
        "SyncTicketHandle",
    }
    missing: dict[str, set[str]] = {}
    for where, fn in _public_callables():
        if where in PRIVATE_ON_PURPOSE:
            continue
        for annotation in inspect.get_annotations(fn).values():
            if not isinstance(annotation, str):
                continue
            for name in _names_in(annotation) & set(defined):
                if name not in exported:
                    missing.setdefault(name, set()).add(where)
    assert not missing, f"public signatures use types no __all__ exports: {missing}"


def test_the_guard_sees_a_type_that_is_not_exported() -> None:
    # The check above finds names in string annotations, nested ones included.
    assert _names_in("AsyncIterator[BulkResult] | None") == {"AsyncIterator", "BulkResult"}
    assert _names_in("'FileLike | Iterable[FileLike]'") == {"FileLike", "Iterable"}
    assert _defined_types()["Waits"] == "skala_async._waits"


# ---------------------------------------------------------------- the blocking twins


def _methods(cls: type) -> dict[str, Callable[..., Any]]:
    """Public methods (``__init__`` included) defined on ``cls`` or its package bases."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        if klass is object:
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_") and attr not in ("__init__", "__aenter__", "__aexit__"):
                continue
            if isinstance(value, (classmethod, staticmethod)):
                found[attr] = value.__func__
            elif inspect.isfunction(value):
                found[attr] = value
    return found


def _sync_return(annotation: str) -> str:
    """What a blocking twin returns for an async method returning ``annotation``."""
    annotation = re.sub(r"^Coroutine\[Any, Any, (.*)\]$", r"\1", annotation)
    annotation = re.sub(r"^AsyncIterator\[(.*)\]$", r"Iterator[\1]", annotation)
    return {"TicketHandle": "SyncTicketHandle"}.get(annotation, annotation)


def _expected(methods: dict[str, Callable[..., Any]], name: str) -> inspect.Signature:
    """The async method's signature as its twin must have it."""
    signature = inspect.signature(methods[name])
    parameters = list(signature.parameters.values())
    if parameters and parameters[-1].kind is inspect.Parameter.VAR_KEYWORD:
        # ``**kwargs`` passed on: the twin names the target's parameters, keyword-only.
        target = inspect.signature(methods[FORWARDS[name]]).parameters.values()
        named = {p.name for p in parameters}
        extra = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in list(target)[1:]
            if p.name not in named and p.kind is not inspect.Parameter.VAR_KEYWORD
        ]
        kept = parameters[:-1]
        if name == "from_env":  # every argument of __init__, by keyword
            kept = kept[:1]
        parameters = [*kept, *extra]
        parameters.sort(key=lambda p: p.kind)
    returns = signature.return_annotation
    return signature.replace(
        parameters=parameters,
        return_annotation=_sync_return(returns) if isinstance(returns, str) else returns,
    )


def _describe(signature: inspect.Signature) -> list[tuple[Any, ...]]:
    described: list[tuple[Any, ...]] = [
        (p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()
    ]
    return [*described, ("->", signature.return_annotation)]


@pytest.mark.parametrize(
    ("async_cls", "sync_cls"),
    [(SkalaClient, sync.SkalaClient), (TicketHandle, sync.SyncTicketHandle)],
    ids=["client", "handle"],
)
def test_every_async_method_has_a_sync_twin_with_the_same_signature(
    async_cls: type, sync_cls: type
) -> None:
    async_methods = _methods(async_cls)
    sync_methods = _methods(sync_cls)
    twins = sorted(set(async_methods) - ASYNC_ONLY)
    assert set(twins) <= set(sync_methods), set(twins) - set(sync_methods)
    for name in twins:
        if name == "__init__" and async_cls is TicketHandle:
            continue  # handles are made by the client, never by the caller
        expected = _describe(_expected(async_methods, name))
        actual = _describe(inspect.signature(sync_methods[name]))
        if name == "close":
            expected[-1] = ("->", "None")
        assert actual == expected, name
    for name in vars(TicketHandle(cast(Any, None), uuid.uuid4())):
        if not name.startswith("_"):
            assert isinstance(getattr(sync.SyncTicketHandle, name), property), name


def test_the_blocking_sandbox_takes_what_the_async_sandbox_takes() -> None:
    from skala_async.testing import SkalaSandbox

    expected = _describe(inspect.signature(SkalaSandbox.__init__))
    assert _describe(inspect.signature(sync.Sandbox.__init__)) == expected


def test_the_twin_check_fails_on_drift() -> None:
    class Drifted(sync.SkalaClient):
        def get_ticket(  # type: ignore[override]
            self, ticket_id: uuid.UUID, *, timeout: float | None = None
        ) -> Any:
            raise NotImplementedError

    with pytest.raises(AssertionError, match="get_ticket"):
        test_every_async_method_has_a_sync_twin_with_the_same_signature(SkalaClient, Drifted)


def test_a_sync_twin_refuses_what_it_cannot_forward() -> None:
    with pytest.raises(ValueError, match="session="):
        sync.SkalaClient("id", "secret", session=cast(Any, object()))
    with pytest.raises(ValueError, match="session="):
        sync.SkalaClient.from_env(session=cast(Any, object()))
    assert skala_async.BulkReport.__module__ == "skala_async.bulk"
