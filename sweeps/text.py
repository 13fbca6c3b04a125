"""Two text helpers every part of the sweep uses, with no MLflow or Optuna import: a URL with
its password masked, and the one line of an exception a user reads."""

from __future__ import annotations

import re

_SECRET_KEYS = {"password", "passwd", "pwd", "pass", "secret", "token", "sslpassword", "api_key", "apikey",
                "access_token", "auth", "key"}
UNPARSED = "<a URL that does not parse: not shown, it may hold a password>"


def _split_url(url: str) -> tuple[str, str, str, str] | None:
    """(scheme, user, host/path, query) of 'scheme://[user[:password]@]host/path[?query]', the
    password dropped; None when it is no such URL. The user info ends at the last '@' (a
    password may hold '@', ':' or '/'), so nothing after it can be taken for a password.
    (SQLAlchemy's make_url splits at the first '@': 'u:s3@cret@db' renders as 'u:***@cret@db'.)"""
    m = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.\-]*)://(.*)", url, re.S)
    if m is None:
        return None
    scheme, rest = m.groups()
    user = ""
    if "@" in rest:  # first, so that a '?' or '/' in the password is not read as the query or path
        info, rest = rest.rsplit("@", 1)
        user = info.split(":", 1)[0].split("?", 1)[0] + (":***" if ":" in info else "")
    rest, _, query = rest.partition("?")
    kept = [kv for kv in query.split("&") if kv and kv.split("=", 1)[0].lower() not in _SECRET_KEYS]
    return scheme, user, rest, "&".join(kept)


def mask_url(url: str | None) -> str | None:
    """A storage or tracking URL as it may be printed: 'postgresql://user:secret@host/db' ->
    'postgresql://user:***@host/db', password-like query parameters dropped; a file path or
    journal path as it is; anything else that holds '@' or looks like a mistyped URL, a
    placeholder."""
    if url is None:
        return None
    parts = _split_url(url)
    if parts is None:
        if "@" in url or re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:/?[^/]", url) and not url.startswith("journal:"):
            return UNPARSED
        return url
    scheme, user, rest, query = parts
    return f"{scheme}://{user + '@' if user else ''}{rest}{'?' + query if query else ''}"


def describe_url(url: str | None) -> str:
    """What a stored MLflow param may hold: the dialect, host and database, no user name,
    password or query ('postgresql://db:5432/optuna')."""
    if not url:
        return "journal (embedded)"
    parts = _split_url(url)
    if parts is None:
        return mask_url(url) or ""
    return f"{parts[0]}://{parts[2]}"

