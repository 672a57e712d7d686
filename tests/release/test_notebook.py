"""The example notebook runs under a real Jupyter kernel, and scripts exit quietly.

The notebook test starts an ipykernel (through nbclient) from a kernel spec written to a
temporary directory for this interpreter, so it depends on no globally installed kernel,
runs every cell of ``examples/quickstart.ipynb`` and fails on any cell error.
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import nbformat
import pytest
from nbclient import NotebookClient

import skala_async as skala
from skala_async._loop_thread import LoopThread as _LoopThread
from skala_async.testing import SkalaSandbox, sandbox_client

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "quickstart.ipynb"
KERNEL_NAME = "skala-async-test"

#: What an abandoned client, session or event loop prints at shutdown when it goes wrong.
NOISE = ("Event loop is closed", "Unclosed", "Traceback", "Exception ignored", "Task was destroyed")

pytestmark = pytest.mark.slow


@pytest.fixture
def jupyter_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private kernel spec for this interpreter, and Jupyter/IPython state in tmp_path."""
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # silences a jupyter_core warning
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))  # searched first for specs
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "skala_async test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    work = tmp_path / "work"
    work.mkdir()
    return work


def _run(nb: nbformat.NotebookNode, cwd: Path) -> tuple[nbformat.NotebookNode, str]:
    """Execute ``nb`` in a fresh kernel; return it with outputs, and the kernel's stderr.

    nbclient owns the kernel: it starts it from the spec above and shuts it down (and
    closes its channels) when done.
    """
    client = NotebookClient(
        nb, timeout=60, kernel_name=KERNEL_NAME, resources={"metadata": {"path": str(cwd)}}
    )
    stderr_path = cwd / "kernel-stderr.txt"
    with stderr_path.open("wb") as stderr:
        client.execute(stderr=stderr)  # raises CellExecutionError on any cell error
    return nb, stderr_path.read_text(errors="replace")


def _outputs(nb: nbformat.NotebookNode, mime: str) -> list[str]:
    found: list[str] = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and mime == "text/plain":
                found.append(output["text"])
            data: dict[str, Any] = output.get("data", {})
            if mime in data:
                found.append(data[mime])
    return found


def test_notebook_is_saved_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], cell.source
        assert cell.execution_count is None, cell.source


def test_notebook_runs_in_a_real_kernel(jupyter_env: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    executed, stderr = _run(nb, jupyter_env)

    html = "\n".join(_outputs(executed, "text/html"))
    text = "\n".join(_outputs(executed, "text/plain"))
    # Rich display worked: ticket tables with issue keys, the sandbox's record.
    assert "skala-ticket" in html
    assert "SUP-" in html
    assert "skala-sandbox" in html
    assert "receipt.pdf" not in html or "latest requests" in html
    # The errors were shown clearly.
    assert "SupportTicketsNotEnabledError (code 20061)" in text
    assert "'virus.exe'" in text
    # The batch was created, and the sync facade worked inside the kernel.
    assert "['PENDING', 'PENDING', 'PENDING']" in text
    assert "ticket_id=UUID(" in text
    # The bulk run: a progress bar (text: no ipywidgets here), a report and data frames.
    assert "tickets: 100%" in text
    assert "6/6" in text
    assert "Warning" not in text  # tqdm falls back to text quietly
    assert "created=5" in text
    assert "skala-bulk-report" in html
    assert 'class="dataframe"' in html
    assert "row-5" in html
    assert "ValidationError" in html
    assert '"status": "CREATED", "issue_key": "SUP-' in text  # ticket.to_dict() as JSON
    # No secret was displayed anywhere.
    sandbox_secret_cells = [c.source for c in executed.cells if "client_secret" in c.source]
    assert sandbox_secret_cells  # the notebook does pass the secret to the client ...
    for output in _outputs(executed, "text/html") + _outputs(executed, "text/plain"):
        assert "client_secret=" not in output  # ... but never shows it
    assert not [line for line in stderr.splitlines() if any(n in line for n in NOISE)], stderr


def test_kernel_that_never_closes_its_client_exits_quietly(jupyter_env: Path) -> None:
    """A client used in a cell and never closed: no noise when the kernel shuts down."""
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import skala_async as skala\n"
                "from skala_async.testing import SkalaSandbox, sandbox_client\n"
                "sandbox = SkalaSandbox(processing_delay=0.01)\n"
                "await sandbox.start()\n"
                "client = sandbox_client(sandbox)"
            ),
            nbformat.v4.new_code_cell(
                "handle = await client.create_ticket(sandbox.customer_id, 'Hi', 'There')\n"
                "ticket = await handle.wait_until_created(timeout=10)\n"
                "assert ticket.issue_key\n"
                "await sandbox.close()  # the sandbox is closed; the client is not"
            ),
        ]
    )
    _, stderr = _run(nb, jupyter_env)
    assert not [line for line in stderr.splitlines() if any(n in line for n in NOISE)], stderr


def test_made_outside_any_loop_and_used_in_later_cells() -> None:
    """Nothing binds to an event loop at construction: make in one cell, use in the next."""
    sandbox = SkalaSandbox(processing_delay=0.01)  # no loop is running here
    loop = asyncio.new_event_loop()  # a kernel's loop: each run_until_complete is a cell
    try:
        loop.run_until_complete(sandbox.start())
        client = sandbox_client(sandbox)  # between cells: no loop is running here either
        handle = loop.run_until_complete(
            client.create_ticket(sandbox.customer_id, "Cell 2", "Made in cell 1")
        )
        ticket = loop.run_until_complete(handle.wait_until_created(timeout=10))
        assert ticket.issue_key
        assert loop.run_until_complete(client.get_ticket(ticket.ticket_id)) == ticket
        loop.run_until_complete(client.close())
        loop.run_until_complete(sandbox.close())
    finally:
        loop.close()


SCRIPT_ASYNCIO_RUN = """
import asyncio
from skala_async.testing import SkalaSandbox, sandbox_client

client = None

async def main():
    global client  # kept alive until interpreter exit, after the loop is closed
    async with SkalaSandbox(processing_delay=0.01) as sb:
        client = sandbox_client(sb)
        handle = await client.create_ticket(sb.customer_id, "Summary", "Description")
        ticket = await handle.wait_until_created(timeout=10)
        local = sandbox_client(sb)  # collected when main() returns, loop still running
        await local.get_ticket(ticket.ticket_id)
        print(ticket.issue_key)

asyncio.run(main())
"""

SCRIPT_LOOP_LEFT_OPEN = """
import asyncio
from skala_async.testing import SkalaSandbox, sandbox_client

loop = asyncio.new_event_loop()  # like a kernel's: never closed
sandbox = SkalaSandbox(processing_delay=0.01)
loop.run_until_complete(sandbox.start())
client = sandbox_client(sandbox)

async def use():
    handle = await client.create_ticket(sandbox.customer_id, "Summary", "Description")
    return await handle.wait_until_created(timeout=10)

print(loop.run_until_complete(use()).issue_key)
loop.run_until_complete(sandbox.close())
"""


@pytest.mark.parametrize(
    "script", [SCRIPT_ASYNCIO_RUN, SCRIPT_LOOP_LEFT_OPEN], ids=["asyncio.run", "loop-left-open"]
)
def test_script_that_never_closes_its_client_exits_quietly(script: str) -> None:
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("SUP-")
    assert result.stderr == ""


def test_a_forgotten_client_still_warns_developers() -> None:
    """The quiet cleanup keeps a ResourceWarning, shown with ``-W default`` / ``-X dev``."""
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-W", "default", "-c", textwrap.dedent(SCRIPT_ASYNCIO_RUN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ResourceWarning: a SkalaClient was never closed" in result.stderr
    assert "Unclosed client session" not in result.stderr
    assert "Event loop is closed" not in result.stderr


# ----------------------------------------------------- the finalizer of a forgotten client


async def test_forgotten_client_collected_in_its_running_loop(
    skala_sandbox: SkalaSandbox,
) -> None:
    client = sandbox_client(skala_sandbox)
    await client.get_ticket(await _a_ticket(skala_sandbox))
    connector = client._transport._session.connector  # type: ignore[union-attr]
    assert connector is not None
    box = [client]
    del client
    with pytest.warns(ResourceWarning, match="SkalaClient was never closed"):
        _forget(box)
    assert connector.closed  # closed at once, no "Unclosed connector" later


def test_forgotten_client_collected_in_another_thread(skala_sandbox_thread: str) -> None:
    """Collected here while its loop runs in another thread: closed in that thread."""
    runner = _LoopThread("test")
    try:
        client = runner.call(
            lambda: skala.SkalaClient(token="t", base_url=skala_sandbox_thread), "test"
        )
        with pytest.raises(skala.AuthenticationError):
            runner.run(client.get_ticket("3c90c3cc-0d44-4b50-8888-8dd25736052a"), "test")
        connector = client._transport._session.connector  # type: ignore[union-attr]
        assert connector is not None
        box = [client]
        del client
        with pytest.warns(ResourceWarning, match="SkalaClient was never closed"):
            _forget(box)
        runner.call(lambda: None, "test")  # let the loop run the scheduled close
        assert connector.closed
    finally:
        runner.stop()


async def test_no_warning_for_an_unused_client_or_a_callers_session(
    skala_sandbox: SkalaSandbox,
) -> None:
    async with aiohttp.ClientSession() as session:
        client = sandbox_client(skala_sandbox, session=session)
        await client.get_ticket(await _a_ticket(skala_sandbox))
        unused = sandbox_client(skala_sandbox)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            del client, unused
            gc.collect()
        assert not session.closed  # the caller's session is theirs to close


@pytest.fixture
def skala_sandbox_thread() -> Iterator[str]:
    """The URL of a sandbox running on a loop thread of its own."""
    from skala_async.sync import Sandbox

    with Sandbox() as sandbox:
        yield sandbox.url


def _forget(box: list[skala.SkalaClient]) -> None:
    """Drop the last reference to a client and collect it (it may sit in a cycle)."""
    box.clear()
    gc.collect()


async def _a_ticket(sandbox: SkalaSandbox) -> str:
    async with sandbox_client(sandbox) as client:
        handle = await client.create_ticket(sandbox.customer_id, "Summary", "Text")
        return str(handle.ticket_id)
