"""Argument types and the option blocks several commands share."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _delay(text: str) -> float | tuple[float, float]:
    """``SECONDS`` or ``MIN,MAX`` (a uniform random delay per ticket)."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SECONDS or MIN,MAX, got {text!r}") from None
    if len(values) == 1 and values[0] >= 0:
        return values[0]
    if len(values) == 2 and 0 <= values[0] <= values[1]:
        return (values[0], values[1])
    raise argparse.ArgumentTypeError(f"expected SECONDS or MIN,MAX with 0 <= MIN <= MAX: {text!r}")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0 to 65535, got {value}")
    return value


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """``--json`` and ``-v``, accepted before and after the subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    default: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    parent.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout (a list for demo), nothing else there",
        **default,
    )
    parent.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log the library's requests (DEBUG) to stderr; secrets are never logged",
        **default,
    )
    return parent


def _credential_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("credentials")
    group.add_argument("--client-id", metavar="ID", help="default: $SKALA_CLIENT_ID")
    group.add_argument(
        "--client-secret",
        metavar="SECRET",
        help="default: $SKALA_CLIENT_SECRET (prefer the environment: see the epilog)",
    )
    group.add_argument(
        "--token", metavar="TOKEN", help="a bearer token obtained elsewhere, instead of id/secret"
    )
    group.add_argument(
        "--base-url",
        metavar="URL",
        help="API base URL (default: $SKALA_BASE_URL, else Ripio's sandbox)",
    )
    group.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="allow a plain http:// base URL to a host that is not loopback",
    )
    group.add_argument(
        "--proxy",
        metavar="URL",
        help="HTTP(S) proxy for every request (default: $HTTPS_PROXY unless $NO_PROXY "
        "exempts the host)",
    )
    group.add_argument(
        "--ca-file",
        metavar="PEM",
        help="CA certificates (PEM) to trust instead of the system's, e.g. a private CA",
    )
    return parent


def add_timeout(parser: argparse.ArgumentParser, default: float | None, help: str) -> None:
    """A ``--timeout SECONDS`` option (a positive number of seconds)."""
    parser.add_argument(
        "--timeout", type=_positive_seconds, default=default, metavar="SECONDS", help=help
    )
