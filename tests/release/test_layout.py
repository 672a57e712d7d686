"""The shape of the package holds: rooms small enough to read, and the import rules bite.

- No module of ``skala_async`` is over 500 lines, and no function over 60 lines unless the
  line above it (or above its decorators) is a comment ``# Over 60 lines: <why>``.
- The ``[tool.importlinter]`` contracts in ``pyproject.toml`` pass on the tree (the test
  command also runs ``lint-imports``), and each kind of contract really fails when a module
  breaks it: an import from a higher layer, an import circle, aiohttp imported outside the
  transport, an optional extra imported by a module that does not own it.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "skala_async"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
REASON = "# Over 60 lines:"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def _long_functions(source: str) -> list[tuple[str, int]]:
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            start = min([d.lineno for d in node.decorator_list] + [node.lineno])
            length = node.end_lineno - start + 1
            above = lines[start - 2].strip() if start >= 2 else ""
            if length > MAX_FUNCTION_LINES and not above.startswith(REASON):
                found.append((node.name, length))
    return found


def test_no_function_is_over_60_lines_without_a_reason() -> None:
    long = {
        str(p.relative_to(ROOT)): found
        for p in _modules()
        if (found := _long_functions(p.read_text(encoding="utf-8")))
    }
    assert long == {}


def test_the_function_length_check_sees_a_long_function_and_its_reason() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(61))
    assert _long_functions(f"def f():\n{body}") == [("f", 62)]
    assert _long_functions(f"{REASON} one table, read as a whole.\ndef f():\n{body}") == []
    decorated = f"{REASON} why.\n@staticmethod\ndef f():\n{body}"
    assert _long_functions(decorated) == []


# ---------------------------------------------------------------------------- import rules


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("importlinter")
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
        ],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and its contracts, to break on purpose."""
    shutil.copytree(PACKAGE, tmp_path / "skala_async", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_import(tree: Path, module: str, line: str) -> None:
    path = tree / "skala_async" / module
    text = path.read_text(encoding="utf-8")
    head, sep, rest = text.partition("from __future__ import annotations\n")
    assert sep, module
    path.write_text(f"{head}{sep}\n{line}\n{rest}", encoding="utf-8")


@pytest.mark.slow
def test_the_tree_keeps_its_contracts(tree: Path) -> None:
    done = _lint_imports(tree)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # the pure core reaching up into the client
        ("models.py", "import skala_async.client  # noqa", "Layers"),
        # a circle between two modules of one layer
        ("_limits.py", "import skala_async._backoff  # noqa", "No import circles"),
        # aiohttp outside the transport, the receivers and testing
        ("_protocol.py", "import aiohttp  # noqa", "aiohttp only in"),
        # an optional extra imported by a module that does not own it
        ("bus.py", "import redis  # noqa", "Optional extras"),
    ],
)
def test_each_contract_fails_when_broken(tree: Path, module: str, line: str, contract: str) -> None:
    if contract == "No import circles":
        _add_import(tree, "_backoff.py", "import skala_async._limits  # noqa")
    _add_import(tree, module, line)
    done = _lint_imports(tree)
    assert done.returncode != 0
    broken = [row for row in done.stdout.splitlines() if " BROKEN" in row]
    assert any(row.startswith(contract) for row in broken), done.stdout


@pytest.mark.slow
def test_a_new_module_must_be_given_a_layer(tree: Path) -> None:
    (tree / "skala_async" / "_unplaced.py").write_text('"""Not in any layer."""\n')
    done = _lint_imports(tree)
    assert done.returncode != 0
    assert "_unplaced" in done.stdout
