"""File helpers shared by the trainer and the sweeps: one exclusive file lock, one atomic
write, one content digest, and one CSV writer."""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing) for the block: processes that
    share the file wait for each other."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def atomic_write(path: str | os.PathLike, content: str | bytes | Callable[[str], None]) -> None:
    """Write `content` (text, bytes, or a function that writes a given file name) to a temp
    file in the same folder, then os.replace it: readers never see half a file, and a crash
    leaves the old file whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if callable(content):
            content(tmp)
        elif isinstance(content, bytes):
            Path(tmp).write_bytes(content)
        else:
            Path(tmp).write_text(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def digest(*arrays: Any) -> str:
    """A 16-hex-digit hash of arrays (numpy, or torch tensors on the CPU) with their shapes (as
    long as the decode cache's keys): the identity of data that has no files behind it
    (pixel-only datasets, the baseline cache's keys)."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        a = a.numpy() if hasattr(a, "numpy") else np.asarray(a)
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """A 16-hex-digit hash of a file's bytes (a weights file's identity: its content, not its path)."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def csv_text(rows: list[list[Any]]) -> str:
    """Rows as CSV text through csv.writer: every CSV the harness writes comes from here, so a
    name with a comma, a quote or a newline is quoted and reads back as it was."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; None when there is no file; ValueError('<path>: cannot be parsed')
    when it is damaged (each caller says what to do about it)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # UnicodeDecodeError is one
        raise ValueError(f"{path}: cannot be parsed") from None
