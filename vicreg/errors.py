"""The exceptions a user sees, and the one helper that makes any exception one line.

Every error caused by a user's input is one line naming the file or key and what is wrong.
This module imports nothing heavy, so the sweep's command line can catch these without
importing torch.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad config file or override; the message is one line naming the key."""


class DataError(ValueError):
    """A bad dataset; the message is one line naming the path and the problem."""


class CheckpointError(ValueError):
    """A weights file that cannot be used, in one line naming the file and what is wrong
    (vicreg/checkpoint.py)."""


class UnsafeCheckpoint(CheckpointError):
    """A file that only full unpickling (which can run code) would read."""


class RankLost(RuntimeError):
    """Data-parallel training lost a process: a collective failed because another rank died or
    hung (vicreg/distributed.py). Its checkpoint is intact; a new group resumes from it."""


def first_line(e: BaseException, limit: int = 300, with_type: bool = False, cause: bool = False,
               sentence: bool = False) -> str:
    """The first line of an exception's message (its type's name when it has none), cut at
    `limit` characters. `with_type`: 'ValueError: ...'; `cause`: the message of the exception it
    was raised from, when there is one (Optuna wraps SQLAlchemy's); `sentence`: only up to the
    first '. ' (torch's messages run on for lines)."""
    if cause and e.__cause__ is not None:
        e = e.__cause__
    text = f"{type(e).__name__}: {e}" if with_type else str(e).strip()
    line = (text.splitlines() or [type(e).__name__])[0] or type(e).__name__
    return (line.split(". ")[0] if sentence else line)[:limit]


def raise_first(problems: list[str]) -> None:
    """Raise the first of a layout scan's problems as a DataError, saying how many more."""
    if problems:
        more = len(problems) - 1
        tail = f" (and {more} more; see vicreg check-data)" if more else ""
        raise DataError(problems[0] + tail)
