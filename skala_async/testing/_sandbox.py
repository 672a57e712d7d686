"""The former home of the sandbox, now :mod:`skala_async.testing.sandbox`.

Kept so that imports from here (``skala_async.sync`` has one) go on working.
"""

from __future__ import annotations

from skala_async.testing.sandbox import *  # noqa: F403
from skala_async.testing.sandbox import __all__ as __all__
