"""MkDocs hook: the docstrings' Sphinx roles read as plain code in the API reference.

The project's docstrings cross-reference with Sphinx roles (``:func:`evaluate```, ``:class:`~a.b.C```);
mkdocstrings renders the role's name as text before the code. This drops the role and, for ``~``,
keeps the last dotted name, as Sphinx shows it.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc|obj|math):(?=<code>)")
TILDE = re.compile(r"<code>~(?:\w+\.)*(\w+)</code>")


def on_page_content(html: str, **kwargs: Any) -> str:
    return TILDE.sub(r"<code>\1</code>", ROLE.sub("", html))
