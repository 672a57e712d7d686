"""``RedisBus``: the bus (:mod:`skala_async.bus`) shared by every process of a service.

Install the extra (``pip install 'skala-async[redis]'``, redis-py's asyncio client) and give
each process's client the same Redis::

    from skala_async.redis import RedisBus

    async with RedisBus.from_url("redis://127.0.0.1:6379/0", prefix="skala:") as bus, \\
            skala.SkalaClient(client_id=..., client_secret=..., bus=bus) as client:
        ...  # the bus is yours: the client never closes it

What goes through Redis, under ``prefix``:

* ticket news on the channel ``<prefix>news``: every final state learned anywhere (a
  verified webhook, a wait's GET, ``get_ticket``) wakes the waits on that ticket in every
  process; final states are also kept as ``<prefix>t:<ticket id>`` for ``ttl`` seconds
  (24 h), so a wait that begins later, in any process, ends at once without a GET;
* webhook health: a verified webhook anywhere puts every process's waits on the slow
  fallback; a GET that finds an outcome no webhook brought, or a refused delivery, takes
  them off it everywhere (``<prefix>webhooks`` remembers which, for processes that start
  later);
* webhook dedupe: ``<prefix>d:<ticket id>:<status>`` is claimed before ``on_event`` runs and
  marked done after it; a callback that fails releases it, so Ripio's redelivery, wherever
  it lands, runs it again. A claim whose process died expires after ``claim_ttl``;
* the 429 pause: a ``Retry-After`` seen by one process pauses requests in all of them until
  it ends (``<prefix>pause``, on Redis's clock).

Redis trouble is never a failed wait. Every operation is bounded by ``op_timeout``; when
Redis does not answer (down, paused, restarted, a network split) the bus logs one warning,
each process carries on with its own view (a :class:`~skala_async.bus.LocalBus` underneath)
and its waits poll on the normal schedule; webhooks deliver ``on_event`` de-duplicated per
process only. It reconnects with capped, jittered backoff, subscribes again, and recovers
what it missed from the kept final states; what it learned meanwhile is sent then.
"""

from __future__ import annotations

from ._bus import RedisBus
from ._link import DEFAULT_PREFIX, DEFAULT_TTL

__all__ = ["DEFAULT_PREFIX", "DEFAULT_TTL", "RedisBus"]
