"""Two text helpers every part of the sweep uses, with no MLflow or Optuna import: a URL with
its password masked, and the one line of an exception a user reads."""

from __future__ import annotations

import re


def mask_url(url: str | None) -> str | None:
    """'postgresql://user:secret@host/db' -> 'postgresql://user:***@host/db'."""
    if url is None:
        return None
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def first_line(e: BaseException, limit: int = 300, with_type: bool = False) -> str:
    """The first line of an exception's message (its type's name when it has none), cut at
    `limit` characters; `with_type`: 'ValueError: ...'."""
    text = f"{type(e).__name__}: {e}" if with_type else str(e).strip()
    return ((text.splitlines() or [type(e).__name__])[0] or type(e).__name__)[:limit]
