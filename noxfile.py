"""The suite on the other supported Pythons, at each end of the dependency range.

Run by the README's test command after the full suite on the development interpreter
(Python 3.11, the newest dependencies, under coverage). Two sessions, so that each
interpreter and each end of the dependency range is covered by two of the three runs:

- ``oldest``: Python 3.10, the oldest supported, with aiohttp, attrs and cattrs at the
  lower bounds of ``pyproject.toml`` (read from it, so a bound raised there is what gets
  tested);
- ``newest``: Python 3.13, the newest supported, with the newest releases of everything.

Both run the suite without the ``slow`` tests (subprocess runs, large files, the notebook,
the documentation and package builds), which run once, under coverage, in the main run,
and install the ``test-core`` extra only: what those tests import, without the linters,
Jupyter, MkDocs or the build tools.

Interpreters are looked up under pyenv's root (``$PYENV_ROOT``, ``pyenv root`` or
``~/.pyenv``), then on ``PATH`` (``python3.10``, if it runs). A missing one is skipped
locally and is an error when ``CI=true``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nox

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - nox runs from the development venv (3.11)
    tomllib = None

ROOT = Path(__file__).parent
OLDEST_PYTHON = "3.10"
NEWEST_PYTHON = "3.13"
CI = os.environ.get("CI") == "true"
#: The slow tests (subprocesses, large files) run once, in the main run under coverage.
#: The notebook's tests are all slow and import Jupyter's packages, not in ``test-core``.
PYTEST = (
    "-m",
    "not slow",
    "-p",
    "no:cacheprovider",
    "-n",
    "2",
    "--dist",
    "loadgroup",
    "--ignore=tests/release/test_notebook.py",
)

nox.options.sessions = ["oldest", "newest"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = CI


def _pyenv_root() -> Path | None:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    pyenv = shutil.which("pyenv")
    if pyenv is not None:
        done = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.strip())
    home = Path.home() / ".pyenv"
    return home if home.is_dir() else None


def _find_interpreters(versions: list[str]) -> None:
    """Put pyenv's interpreters of ``versions`` on PATH where nox looks for them."""
    root = _pyenv_root()
    found: list[str] = []
    for version in versions:
        candidates = sorted(
            (root / "versions").glob(f"{version}.*/bin/python{version}") if root else [],
            key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
        )
        if candidates:
            found.append(str(candidates[-1].parent))
        elif _runs(f"python{version}"):
            continue  # on PATH (a pyenv shim only when pyenv has that version selected)
        elif CI:
            where = f"on PATH or under {root / 'versions'}" if root else "on PATH (no pyenv)"
            sys.exit(f"noxfile: Python {version} not found {where}; CI needs it")
    if found:
        os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


def _runs(command: str) -> bool:
    path = shutil.which(command)
    if path is None:
        return False
    done = subprocess.run([path, "-c", ""], capture_output=True, check=False)  # noqa: S603
    return done.returncode == 0


_find_interpreters([OLDEST_PYTHON, NEWEST_PYTHON])


def lower_bounds() -> list[str]:
    """``name==version`` for each run-time dependency, at its lower bound in pyproject."""
    assert tomllib is not None
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = []
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+)\s*", requirement)
        if match is None:
            raise ValueError(f"no plain lower bound to test in {requirement!r}")
        pins.append(f"{match[1]}=={match[2]}")
    return pins


@nox.session(python=NEWEST_PYTHON)
def newest(session: nox.Session) -> None:
    """The suite, without the slow tests, on the newest Python and the newest releases."""
    session.install("-q", "--upgrade", "--upgrade-strategy", "eager", "-e", ".[test-core]")
    session.run("python", "-m", "pytest", *PYTEST, *session.posargs)


@nox.session(python=OLDEST_PYTHON)
def oldest(session: nox.Session) -> None:
    """The suite, without the slow tests, on the oldest Python, aiohttp, attrs and cattrs."""
    pins = lower_bounds()
    constraints = Path(session.create_tmp()) / "oldest.txt"
    constraints.write_text("\n".join(pins) + "\n", encoding="utf-8")
    session.install("-q", "-e", ".[test-core]", "-c", str(constraints))
    # pip honours the constraints or fails; check what is installed all the same.
    session.run("python", "-c", _CHECK_PINS, *pins, silent=True)
    session.run("python", "-m", "pytest", *PYTEST, *session.posargs)


_CHECK_PINS = """
import sys
from importlib.metadata import version
from packaging.version import Version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    if Version(version(name)) != Version(wanted):
        sys.exit(f"{name} {version(name)} is installed, not {wanted}")
"""
