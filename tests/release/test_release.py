"""Release hygiene: one version everywhere, a dated CHANGELOG, and distributions that work.

- ``skala_async/_version.py`` is the only place the version is written: the build backend
  reads it (``pyproject.toml``), and the installed metadata, ``skala_async.__version__``
  and ``skala-tickets --version`` all say the same.
- The CHANGELOG has a dated section for the version.
- ``python -m build`` makes a wheel and an sdist holding what they must and no junk; each
  installs into a new venv and passes a smoke test there (import, ``--version``, the demo
  against the bundled sandbox), run outside the source tree.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import skala_async
from skala_async import _version
from skala_async.cli import main

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the release tests that read pyproject run on 3.11+
    tomllib = None

ROOT = Path(__file__).resolve().parents[2]
VERSION = _version.__version__
#: Files of the source tree that must not be in a distribution.
JUNK = re.compile(
    r"(^|/)(\.venv|\.nox|\.git|__pycache__|\.pytest_cache|\.mypy_cache|\.ruff_cache|"
    r"\.hypothesis|htmlcov|dist|build|[^/]*\.egg-info)(/|$)|\.py[co]$|(^|/)\.coverage"
)


def _pyproject() -> dict[str, object]:
    if tomllib is None:  # pragma: no cover
        pytest.skip("tomllib needs Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _script(name: str) -> Path:
    """A console script installed beside this interpreter."""
    bindir = Path(sys.executable).parent
    return bindir / (f"{name}.exe" if os.name == "nt" else name)


def test_the_version_is_written_once() -> None:
    data = _pyproject()
    project = data["project"]
    assert isinstance(project, dict)
    assert "version" not in project
    assert project["dynamic"] == ["version"]
    assert data["tool"]["hatch"]["version"]["path"] == "skala_async/_version.py"  # type: ignore[index]
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", VERSION)
    text = (ROOT / "skala_async" / "_version.py").read_text(encoding="utf-8")
    assert re.findall(r"^__version__ = \"(.+)\"$", text, re.MULTILINE) == [VERSION]


def test_the_installed_metadata_and_the_package_agree() -> None:
    assert importlib.metadata.version("skala-async") == VERSION
    assert skala_async.__version__ == VERSION


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"skala-tickets {VERSION}\n"


def test_the_installed_command_says_the_same_version() -> None:
    done = subprocess.run(  # noqa: S603 - our own installed command
        [str(_script("skala-tickets")), "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"skala-tickets {VERSION}\n", "")


def test_the_changelog_dates_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\](.*)$", text, re.MULTILINE)
    assert headings[0] == ("Unreleased", "")
    dated = dict(headings[1:])
    assert VERSION in dated, f"no section for {VERSION} in CHANGELOG.md"
    assert re.fullmatch(r" - \d{4}-\d{2}-\d{2}", dated[VERSION])


# -------------------------------------------------------------------------- distributions


def _run(args: list[str], cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.pop("SKALA_LOG", None)
    done = subprocess.run(  # noqa: S603 - our own commands
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _members_of_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as sdist:
        names = sdist.getnames()
    prefix = f"skala_async-{VERSION}/"
    assert all(n.startswith(prefix) or n == prefix.rstrip("/") for n in names), names
    return [n[len(prefix) :] for n in names if n.startswith(prefix)]


def _smoke(venv: Path, where: Path) -> None:
    python = venv / "bin" / "python"
    out = _run(
        [str(python), "-c", "import skala_async as s; print(s.__version__, s.__file__)"],
        where,
    )
    version, location = out.split()
    assert version == VERSION
    assert Path(location).is_relative_to(venv), "imported from outside the new venv"
    assert _run([str(venv / "bin" / "skala-tickets"), "--version"], where) == (
        f"skala-tickets {VERSION}\n"
    )
    demo = _run([str(venv / "bin" / "skala-tickets"), "demo"], where)
    assert len(re.findall(r"\bCREATED\s+SUP-\d+", demo)) == 5
    assert "Summary: 5 created, 0 failed, 1 rejected as intended" in demo


@pytest.mark.slow
def test_wheel_and_sdist_install_into_a_new_venv_and_run(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], tmp_path)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name == f"skala_async-{VERSION}-py3-none-any.whl"
    assert sdist.name == f"skala_async-{VERSION}.tar.gz"

    in_sdist = _members_of_sdist(sdist)
    for needed in (
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "SECURITY.md",
        "pyproject.toml",
        "mkdocs.yml",
        "docs/index.md",
        "skala_async/py.typed",
        "skala_async/testing/openapi.json",
        "tests/conftest.py",
        "tests/release/test_release.py",
    ):
        assert needed in in_sdist, f"{needed} missing from the sdist"
    junk = [n for n in in_sdist if JUNK.search(n)]
    assert junk == [], f"junk in the sdist: {junk[:20]}"

    with zipfile.ZipFile(wheel) as zf:
        in_wheel = zf.namelist()
    info = f"skala_async-{VERSION}.dist-info/"
    for needed in (
        "skala_async/__init__.py",
        "skala_async/py.typed",
        "skala_async/testing/openapi.json",
        f"{info}licenses/LICENSE",
        f"{info}entry_points.txt",
    ):
        assert needed in in_wheel, f"{needed} missing from the wheel"
    assert [n for n in in_wheel if not n.startswith(("skala_async/", info))] == []
    assert [n for n in in_wheel if JUNK.search(n)] == []

    # The wheel, then the sdist (built from it by pip) over it, each smoke-tested.
    venv = tmp_path / "venv"
    elsewhere = tmp_path / "elsewhere"  # not the source tree: nothing imported from it
    elsewhere.mkdir()
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, str(wheel)], elsewhere)
    _smoke(venv, elsewhere)
    _run([*pip, "--force-reinstall", "--no-deps", str(sdist)], elsewhere)
    _smoke(venv, elsewhere)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """``.ci/run`` ends with the README's one-line test command, nox included."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Run the tests", 1)[1]
    command = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert "\n" not in command
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip("\n").splitlines()
    assert ci[-1] == command
    assert "coverage run -m pytest -n 2 --dist loadgroup" in command
    assert command.endswith("&& .venv/bin/python -m nox")
