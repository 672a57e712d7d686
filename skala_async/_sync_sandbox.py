"""The blocking sandbox of :mod:`skala_async.sync`: the async sandbox served from a private
event loop in a daemon thread of its own."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._loop_thread import LoopThread, OnLoopThread, shutdown

if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence
    from typing import Literal

    from .testing.sandbox import SkalaSandbox
    from .testing.sandbox._values import Delay, Outcome

__all__ = ["Sandbox"]

T = TypeVar("T")


class Sandbox(OnLoopThread):
    """A blocking wrapper of :class:`skala_async.testing.SkalaSandbox` for scripts.

    It starts serving at construction, on a private event loop in a daemon thread, so a
    sync client (or any other program) can talk to it while the calling thread blocks::

        with Sandbox() as sb, SkalaClient(sb.client_id, sb.client_secret, base_url=sb.url) as c:
            ticket = c.create_ticket(sb.customer_id, "Summary", "Text").wait_until_created()

    Its arguments are those of ``SkalaSandbox``. Its knobs (``support_tickets_enabled``,
    ``processing_delay``, ``outcome`` ...) can be read and set here, and its other methods
    called, as on the async sandbox: each access runs in the sandbox's own thread, and
    coroutine methods (``wait_until_processed`` ...) block until done. After :meth:`close`
    the record (``requests``, ``tickets`` ...) can still be read.
    """

    _what = "sandbox"
    _sandbox: SkalaSandbox

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str | None = None,
        client_secret: str | None = None,
        customer_id: str | None = None,
        customer_email: str = "customer@example.com",
        support_tickets_enabled: bool = True,
        processing_delay: Delay = 0.05,
        outcome: Outcome = "CREATED",
        token_ttl: float = 36000,
        webhook_url: str | Sequence[str] | None = None,
        webhook_balance: Literal["random", "round-robin"] = "random",
        webhook_secret: str | None = None,
        # The sandbox's DEFAULT_SIGNATURE_HEADER (not imported: it would load the sandbox
        # with this module); the signature test compares the two.
        webhook_signature_header: str = "Http-X-Wh-Signature-256",
        webhook_timeout: float = 10.0,
        webhook_duplicates: int = 0,
        webhook_delay: float | tuple[float, float] = 0.0,
        webhook_drop: bool | float = False,
        webhook_wrong_signature: bool = False,
        webhook_out_of_order: bool | float = False,
        recording: bool = True,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        from .testing.sandbox import SkalaSandbox

        options = {k: v for k, v in locals().items() if k not in ("self", "SkalaSandbox")}
        runner = LoopThread("sandbox")

        async def start() -> SkalaSandbox:
            sandbox = SkalaSandbox(**options)
            await sandbox.start()
            return sandbox

        try:
            sandbox = runner.run(start(), "Sandbox()")
        except BaseException:
            runner.stop()
            raise
        self._runner = runner
        self._sandbox = sandbox
        self._finalizer = weakref.finalize(self, shutdown, runner, sandbox.close)

    @property
    def sandbox(self) -> SkalaSandbox:
        """The underlying async sandbox (it lives on this wrapper's private event loop)."""
        return self._sandbox

    @property
    def url(self) -> str:
        """Base URL, e.g. ``"http://127.0.0.1:51234"``."""
        return self._sandbox.url

    @property
    def client_id(self) -> str:
        """The OAuth2 client id the sandbox accepts."""
        return self._sandbox.client_id

    @property
    def client_secret(self) -> str:
        """The matching client secret."""
        return self._sandbox.client_secret

    @property
    def customer_id(self) -> str:
        """The default customer: exists, is active and has an email."""
        return self._sandbox.customer_id

    def add_customer(
        self, email: str | None = "customer@example.com", *, customer_id: str | None = None
    ) -> str:
        """Create a customer and return its id; ``email=None`` makes one without an email."""
        sandbox = self._sandbox
        return self._in_loop(lambda: sandbox.add_customer(email, customer_id=customer_id))

    def _in_loop(self, fn: Callable[[], T]) -> T:
        runner = self._runner
        if runner.in_loop_thread or runner.stopped:
            return fn()  # nothing runs concurrently any more
        return runner.call(fn, "Sandbox")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        sandbox = self._sandbox
        value = self._in_loop(lambda: getattr(sandbox, name))
        if not callable(value):
            return value
        runner = self._runner
        if inspect.iscoroutinefunction(value):

            def run_coroutine(*args: Any, **kwargs: Any) -> Any:
                return runner.run(value(*args, **kwargs), f"Sandbox.{name}()")

            return run_coroutine

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._in_loop(lambda: value(*args, **kwargs))

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        sandbox = self._sandbox
        self._in_loop(lambda: setattr(sandbox, name, value))

    def __repr__(self) -> str:
        return "<sync." + repr(self._sandbox)[1:]

    def _repr_html_(self) -> str:
        return self._in_loop(self._sandbox._repr_html_)
