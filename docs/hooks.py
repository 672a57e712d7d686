"""MkDocs hook: the docstrings use Sphinx roles (``:class:`Ticket```); show the name alone."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|data|attr|exc|mod|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub("", html)
