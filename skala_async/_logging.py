"""``SKALA_LOG``: switch the library's logging on without code.

The loggers (all children of ``skala_async``; standard :mod:`logging`, silent unless
configured):

=========================  ==========================================================
``skala_async``            webhooks stopped or started arriving (INFO)
``skala_async.http``       every HTTP attempt with its status (DEBUG); every retry, token
                           refresh and failed request with the reason (INFO). Each line
                           names the ticket (``ticket=<id>``, ``ticket=(new)`` for a
                           create not yet answered), the attempt and the server's
                           ``request_id`` when it sent one
``skala_async.auth``       tokens fetched, rejected, refresh failures (DEBUG)
``skala_async.wait``       a poll that failed and will be repeated (DEBUG)
``skala_async.bulk``       concurrency halved (DEBUG), a run that stopped sending (WARNING)
``skala_async.webhooks``   refused deliveries (WARNING), duplicates (DEBUG), failures of
                           your callback (ERROR)
``skala_async.cli``        the ``skala-tickets`` command
=========================  ==========================================================

No line holds a secret (client secret, token, webhook secret, proxy password).
"""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["LEVELS", "env_handler_installed", "setup_from_env"]

#: The values ``SKALA_LOG`` takes (any case).
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}

_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


class _EnvHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler ``SKALA_LOG`` installs (to stderr), told apart from a user's own."""


def env_handler_installed() -> bool:
    """Whether ``SKALA_LOG`` put its handler on the ``skala_async`` logger."""
    return any(isinstance(h, _EnvHandler) for h in logging.getLogger("skala_async").handlers)


def setup_from_env(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Log ``skala_async`` to stderr at the level ``SKALA_LOG`` names; once.

    Any other value (or none) leaves logging alone, as the standard library sets it up.
    Returns whether a handler was installed.
    """
    value = (os.environ if environ is None else environ).get("SKALA_LOG", "")
    level = LEVELS.get(value.strip().lower())
    if level is None:
        return False
    if env_handler_installed():
        return False
    logger = logging.getLogger("skala_async")
    handler = _EnvHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level)
    return True
