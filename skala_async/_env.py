"""The environment variables that configure a client, read in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping

CLIENT_ID_ENV = "SKALA_CLIENT_ID"
CLIENT_SECRET_ENV = "SKALA_CLIENT_SECRET"  # noqa: S105 - the name of a variable, not a secret
BASE_URL_ENV = "SKALA_BASE_URL"


def env_credentials(environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """``(client_id, client_secret)`` from the environment; unset or empty is ``None``."""
    env = os.environ if environ is None else environ
    return env.get(CLIENT_ID_ENV) or None, env.get(CLIENT_SECRET_ENV) or None


def env_base_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The base URL from the environment; unset or empty is ``None``."""
    env = os.environ if environ is None else environ
    return env.get(BASE_URL_ENV) or None
