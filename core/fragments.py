"""Live messages made of several out-of-band fragments.

A browser parses one websocket message as one piece of HTML, and its first element
decides how the rest is read: after a ``<section>`` or a ``<div>``, a ``<tbody>``,
``<tr>`` or ``<td>`` loses its table tags (htmx is left with bare cell contents, finds
no target for them and logs ``htmx:oobErrorNoTarget``); after a ``<tbody>``, a ``<tr>``
is wrapped in a new ``<tbody>``. So the fragments of one message go as frames: one per
kind of table part, that part first, and every other fragment with the first frame.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TABLE_PARTS = frozenset({"caption", "colgroup", "col", "thead", "tbody", "tfoot", "tr", "td", "th"})
_FIRST_TAG = re.compile(r"\s*<([a-zA-Z][^\s/>]*)")


def root_tag(fragment: str) -> str:
    """The fragment's first element's tag, lower case ("" for text)."""
    match = _FIRST_TAG.match(fragment)
    return match.group(1).lower() if match else ""


def frames(fragments: Iterable[str]) -> list[str]:
    """The websocket messages that carry ``fragments`` (each one element with its
    ``hx-swap-oob``) so that every one parses as written; empty fragments are dropped."""
    tables: dict[str, list[str]] = {}
    others: list[str] = []
    for fragment in fragments:
        if not fragment:
            continue
        tag = root_tag(fragment)
        (tables.setdefault(tag, []) if tag in TABLE_PARTS else others).append(fragment)
    messages = ["".join(parts) for parts in tables.values()]
    if not others:
        return messages
    if not messages:
        return ["".join(others)]
    messages[0] += "".join(others)
    return messages
