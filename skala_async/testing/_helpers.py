"""Small helpers to point a client at a sandbox with test-speed timings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from skala_async._backoff import PollPolicy, RetryPolicy

if TYPE_CHECKING:
    from skala_async.client import SkalaClient
    from skala_async.testing.sandbox import SkalaSandbox

#: Polling for tests: first GET after 10 ms, gaps of 10 to 100 ms.
FAST_POLL = PollPolicy(first_delay=0.01, min_interval=0.01, max_interval=0.1)
#: Retries for tests: 4 attempts, delays of at most 50 ms (``Retry-After`` still a floor).
FAST_RETRY = RetryPolicy(attempts=4, initial=0.01, cap=0.05, max_retry_after=5.0)


def sandbox_client(sandbox: SkalaSandbox, **kwargs: Any) -> SkalaClient:
    """A :class:`~skala_async.SkalaClient` for ``sandbox``, with :data:`FAST_POLL`,
    :data:`FAST_RETRY` and ``trust_env=False`` (no proxy from the environment) unless
    ``kwargs`` say otherwise."""
    from skala_async.client import SkalaClient

    kwargs.setdefault("poll", FAST_POLL)
    kwargs.setdefault("retry", FAST_RETRY)
    # A proxy set for the machine (HTTPS_PROXY) must not carry traffic to a local sandbox.
    kwargs.setdefault("trust_env", False)
    return SkalaClient(
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        base_url=sandbox.url,
        **kwargs,
    )
