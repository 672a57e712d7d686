"""The documentation site: it builds with ``mkdocs build --strict``, a broken link, anchor or
API reference fails that build, the built site fetches nothing from other hosts, and the
examples the README and the pages show compile (the README's quickstart and the service
example of docs/asyncio-service.md also run, against the sandbox).
"""

from __future__ import annotations

import ast
import html.parser
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from skala_async.testing import SkalaSandbox

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PUBLIC_MODULES = [
    "skala_async",
    "skala_async.bulk",
    "skala_async.webhooks",
    "skala_async.bus",
    "skala_async.redis",
    "skala_async.sync",
    "skala_async.testing",
]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_MKDOCS_2_WARNING"] = "1"  # Material's banner about its successor, on stderr
    for name in list(env):  # the sandbox runs on 127.0.0.1: no proxy in the way
        if name.lower() in {"http_proxy", "https_proxy", "all_proxy"}:
            del env[name]
    return env


def _mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole site, built once for this module from the repository's mkdocs.yml (a
    subprocess of several seconds: the tests that use it are ``slow``, run once, in the
    coverage run)."""
    out = tmp_path_factory.mktemp("site")
    result = _mkdocs_build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@pytest.mark.slow
def test_site_builds_strict_with_every_page(site: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert config["strict"] is True

    def pages(nav: Any) -> Iterator[str]:
        for item in nav:
            if isinstance(item, str):
                yield item
            else:
                for value in item.values():
                    yield from [value] if isinstance(value, str) else pages(value)

    in_nav = set(pages(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert in_nav == on_disk  # every page is reachable, and the nav names no missing page
    for page in in_nav:
        assert (site / page.replace(".md", ".html")).is_file(), page


@pytest.mark.slow
def test_api_reference_documents_every_public_module(site: Path) -> None:
    text = "".join(p.read_text(encoding="utf-8") for p in (site / "reference").glob("*.html"))
    for module in PUBLIC_MODULES:
        assert f'id="{module}"' in text, module
    for name in [
        "skala_async.SkalaClient.create_ticket",
        "skala_async.TicketHandle.wait_until_created",
        "skala_async.bulk.BulkReport",
        "skala_async.webhooks.WebhookReceiver",
        "skala_async.bus.TicketBus",
        "skala_async.redis.RedisBus",
        "skala_async.sync.SkalaClient",
        "skala_async.testing.SkalaSandbox",
        "skala_async.testing.mock_skala",
    ]:
        assert f'id="{name}"' in text, name
    # The docstrings' Sphinx roles are shown as the names alone, not as ":class:".
    assert not re.search(r":(class|meth|func|data|attr|exc|mod):", text)


class _Fetched(html.parser.HTMLParser):
    """What a browser fetches by itself when it shows a page (not the links one follows)."""

    #: Elements whose ``src`` the browser loads with the page.
    LOADED: ClassVar[frozenset[str]] = frozenset(
        {"script", "img", "iframe", "source", "audio", "video", "embed", "track"}
    )

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "link":
            self.urls.append(values.get("href") or "")
        elif tag in self.LOADED:
            self.urls += [values.get("src") or "", values.get("poster") or ""]
        elif tag == "object":
            self.urls.append(values.get("data") or "")
        if values.get("style"):
            self.urls += re.findall(r"url\(([^)]*)\)", values["style"] or "")


@pytest.mark.slow
def test_built_site_fetches_nothing_from_other_hosts(site: Path) -> None:
    remote = re.compile(r"""^\s*['"]?(https?:)?//""", re.IGNORECASE)
    pages = list(site.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        parser = _Fetched()
        parser.feed(page.read_text(encoding="utf-8"))
        assert not [u for u in parser.urls if remote.match(u)], page
    for css in site.rglob("*.css"):
        text = css.read_text(encoding="utf-8")
        assert not re.search(r"""url\(\s*['"]?(https?:)?//|@import""", text), css
    # No web font is asked for: the theme's `font: false`.
    assert not list(site.rglob("*.woff*"))
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis" not in index
    assert "fonts.gstatic" not in index


# ------------------------------------------------------------- what fails the build


def _copy_with_pages(tmp_path: Path, pages: dict[str, str]) -> Path:
    """The repository's site configuration, on a home page and ``pages``."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    config["nav"] = [{"Home": "index.md"}, *({name: name} for name in pages)]
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(DOCS / "hooks.py", docs / "hooks.py")
    (docs / "index.md").write_text("# Home\n\n## Section\n\nText.\n", encoding="utf-8")
    for name, text in pages.items():
        (docs / name).write_text(text, encoding="utf-8")
    # mkdocstrings finds the package where the repository's config says it is.
    [handlers] = [p["mkdocstrings"]["handlers"] for p in config["plugins"] if "mkdocstrings" in p]
    handlers["python"]["paths"] = [str(ROOT)]
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.slow
def test_the_same_setup_without_a_break_builds(tmp_path: Path) -> None:
    page = "# Other\n\nSee [the home page](index.md#section).\n\n::: skala_async.Ticket\n"
    result = _mkdocs_build(_copy_with_pages(tmp_path, {"other.md": page}), tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    built = (tmp_path / "site" / "other.html").read_text(encoding="utf-8")
    assert 'id="skala_async.Ticket"' in built
    assert 'href="index.html#section"' in built


@pytest.mark.slow
def test_broken_links_fail_the_build(tmp_path: Path) -> None:
    pages = {
        "page.md": "# A\n\nSee [a page](missing.md).\n",
        "anchor.md": "# B\n\nSee [a section](index.md#no-such-section).\n",
        "local.md": "# C\n\nSee [an anchor](#nowhere).\n",
        "xref.md": "# D\n\nSee [the client][skala_async.NoSuchClient].\n",
    }
    result = _mkdocs_build(_copy_with_pages(tmp_path, pages), tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # Each break is reported by itself: one warning each, and the build aborts on them.
    for reported in ["missing.md", "no-such-section", "nowhere", "skala_async.NoSuchClient"]:
        assert reported in output, reported
    assert "Aborted with 4 warnings in strict mode" in output, output


@pytest.mark.slow
def test_a_missing_api_object_fails_the_build(tmp_path: Path) -> None:
    page = "# Other\n\n::: skala_async.NoSuchThing\n"
    result = _mkdocs_build(_copy_with_pages(tmp_path, {"other.md": page}), tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "skala_async.NoSuchThing" in output


# ------------------------------------------------------------- the README and the pages


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_links_to_pages_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    links = [link for link in _links(text) if not re.match(r"[a-z]+:", link)]
    assert len(links) >= 12
    for link in links:
        path, _, anchor = link.partition("#")
        assert path.startswith("docs/"), link
        assert path.endswith(".md"), link
        target = ROOT / path
        assert target.is_file(), link
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), re.M)
            slugs = {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}
            assert anchor in slugs, link
    # Every page of the site is one link away from the README.
    pages = {p.relative_to(ROOT).as_posix() for p in DOCS.glob("*.md")}
    assert pages <= {link.partition("#")[0] for link in links}


def _python_blocks(path: Path) -> list[tuple[int, str]]:
    blocks = []
    lines = path.read_text(encoding="utf-8").splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == "```python":
            start = number
        elif start is not None and line.strip() == "```":
            blocks.append((start, textwrap.dedent("\n".join(lines[start : number - 1]))))
            start = None
    return blocks


@pytest.mark.parametrize(
    "path", [README, *sorted(DOCS.rglob("*.md"))], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_python_examples_compile(path: Path) -> None:
    for line, code in _python_blocks(path):
        try:  # notebook examples use top-level await
            compile(code, f"{path.name}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        except SyntaxError as exc:
            pytest.fail(f"{path.name}, the example at line {line}: {exc}")


def _example(path: Path, marker: str) -> str:
    [code] = [code for _, code in _python_blocks(path) if marker in code]
    return code


@pytest.mark.slow
def test_readme_quickstart_runs_as_shown(tmp_path: Path) -> None:
    code = _example(README, "asyncio.run(main())")
    result = subprocess.run(  # noqa: S603 - our own interpreter, the README's example
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    ticket_id, status = first.split()
    uuid.UUID(ticket_id)
    assert status == "PENDING"
    assert re.fullmatch(r"SUP-\d+", second)


async def test_service_example_serves_escalations(monkeypatch: pytest.MonkeyPatch) -> None:
    namespace: dict[str, Any] = {"__name__": "service_example"}
    exec(_example(DOCS / "asyncio-service.md", "def make_app()"), namespace)  # noqa: S102
    async with SkalaSandbox() as sandbox:
        monkeypatch.setenv("SKALA_CLIENT_ID", sandbox.client_id)
        monkeypatch.setenv("SKALA_CLIENT_SECRET", sandbox.client_secret)
        monkeypatch.setenv("SKALA_BASE_URL", sandbox.url)
        async with TestClient(TestServer(namespace["make_app"]())) as http:
            refused = await http.post(
                "/escalations",
                json={"customer_id": "nope", "summary": "two\nlines", "description": "x"},
            )
            assert refused.status == 422
            problems = (await refused.json())["problems"]
            assert [p.split(":")[0] for p in problems] == ["customer_id", "summary"]
            assert sandbox.requests == []  # nothing was sent, not even a token request

            accepted = await http.post(
                "/escalations",
                json={
                    "customer_id": sandbox.customer_id,
                    "summary": "Card top-up not credited",
                    "description": "Sent from the service example.",
                },
            )
            assert accepted.status == 202
            ticket_id = (await accepted.json())["ticket_id"]
            [create] = sandbox.requests_to("create")
            assert create.fields["summary"] == "Card top-up not credited"

            state = await http.get(f"/escalations/{ticket_id}")
            assert state.status == 200
            assert (await state.json())["status"] in {"PENDING", "CREATED"}
