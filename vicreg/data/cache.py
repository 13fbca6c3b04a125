"""The decode cache: every image file decoded and resized once per (set, image size) into a
uint8 .npy file, built a chunk at a time under a file lock and written atomically, then
memory-mapped, so that epochs, trials and worker processes share one decode and no process
holds the set in memory twice."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..io import atomic_write, file_lock

CACHE_VERSION = 1


def decode_image(path: Path, size: int, channels: int = 1) -> tuple[np.ndarray, bool]:
    """Decode one file and resize (antialiased) -> (uint8 (channels, size, size), was_rgb)."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        with Image.open(path) as img:
            img.load()
            # grey with alpha (LA), 32-bit float (F) and 16-bit are grey too: no colour warning
            was_rgb = img.mode not in ("L", "LA", "F", "I", "I;16", "I;16B", "I;16L", "I;16N", "P", "1")
            if img.mode.startswith("I") or img.mode == "F":  # 16-bit or float: scale to 8 bit by the maximum
                a = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0).clip(0)
                top = a.max() if img.mode == "F" else max(a.max(), 1)  # a float image in [0, 1] was all 0
                img = Image.fromarray((a / (top if top > 0 else 1) * 255).astype(np.uint8))
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    except DataError:
        raise
    except Exception as e:  # PIL raises many kinds for a bad file
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr), was_rgb


def _cache_key(label: str, files: list[Path], size: int, channels: int, names: list[str]) -> str:
    h = hashlib.sha256(json.dumps([CACHE_VERSION, label, size, channels]).encode())
    for p, name in zip(files, names):
        st = p.stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cached_images(label: str, files: list[Path], size: int, channels: int, cache_dir: str | Path,
                  skip_bad: bool = False, names: list[str] | None = None
                  ) -> tuple[np.ndarray, list[str], list[str], str]:
    """uint8 (N, channels, size, size) for `files`, decoded once and memory-mapped after.

    Returns (images, names kept, names skipped, cache key); names are the files' names, or
    `names` (one per file: a folder set's <class>/<file>). The cache file's name holds a hash of
    every source file's name, size and mtime, so any change makes a new entry. A file
    lock makes concurrent processes wait for one decode instead of all decoding. A cache
    entry that is damaged (cut short, overwritten, or disagreeing with its JSON sidecar) is
    derived data: it is rebuilt, with one warning naming it.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    names = names if names is not None else [p.name for p in files]
    key = _cache_key(label, files, size, channels, names)
    stem = f"{label}-{size}px-c{channels}-{key}"
    npy, meta = cache / f"{stem}.npy", cache / f"{stem}.json"
    with file_lock(cache / f"{stem}.lock"):
        loaded = _load_entry(npy, meta, size, channels) if npy.is_file() and meta.is_file() else None
        if loaded is None:
            kept, skipped = _build_entry(npy, files, size, channels, skip_bad, names)
            # The manifest goes first; the .npy appearing is what marks the entry complete.
            info = {"names": kept, "skipped": skipped, "shape": [len(kept), channels, size, size], "dtype": "uint8"}
            atomic_write(meta, lambda t: Path(t).write_text(json.dumps(info)))
            os.replace(f"{npy}.part", npy)
            loaded = np.load(npy, mmap_mode="r"), info
    arr, info = loaded
    if info["skipped"] and not skip_bad:
        bad = files[names.index(info["skipped"][0])] if info["skipped"][0] in names else info["skipped"][0]
        raise DataError(f"{bad}: cannot decode image (set data.skip_bad_images to skip it)")
    return arr, info["names"], info["skipped"], key


def _load_entry(npy: Path, meta: Path, size: int, channels: int) -> tuple[np.ndarray, dict] | None:
    """A cache entry, memory-mapped and checked against its sidecar; None (with a warning) if damaged."""
    try:
        info = json.loads(meta.read_text())
        arr = np.load(npy, mmap_mode="r", allow_pickle=False)
        want = (len(info["names"]), channels, size, size)
        if arr.dtype != np.uint8 or arr.shape != want or list(arr.shape) != info.get("shape", list(want)):
            raise ValueError(f"holds {arr.dtype} {arr.shape}, expected uint8 {want}")
        return arr, info
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"{npy}: damaged cache file ({str(e).splitlines()[0][:120]}); rebuilding it", stacklevel=4)
        return None


DECODE_CHUNK = 256  # images decoded at once: peak memory is a chunk, not the set


def _build_entry(npy: Path, files: list[Path], size: int, channels: int, skip_bad: bool,
                 names: list[str]) -> tuple[list[str], list[str]]:
    """Decode `files` chunk by chunk into `<npy>.part`, a .npy memory map of (N kept, channels,
    size, size) uint8 (the caller renames it into place) -> (names kept, names skipped).

    Peak memory is DECODE_CHUNK images, whatever the set's size: each chunk is written to the
    map and dropped. Undecodable files (with skip_bad) are known only once decoded, so the map
    is sized for every file and, when some were skipped, copied chunk-wise into one of the
    kept count (a second write of the set on disk, never in memory)."""
    from numpy.lib.format import open_memmap

    def one(p: Path) -> tuple[np.ndarray, bool] | DataError:
        try:
            return decode_image(p, size, channels)
        except DataError as e:
            if not skip_bad:
                raise
            return e

    part = Path(f"{npy}.part")
    kept: list[str] = []
    skipped: list[str] = []
    rgb: list[str] = []
    out = open_memmap(part, mode="w+", dtype=np.uint8, shape=(len(files), channels, size, size))
    try:
        # PIL releases the GIL while inflating PNGs, so threads use every core.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for start in range(0, len(files), DECODE_CHUNK):
                chunk = slice(start, start + DECODE_CHUNK)
                for name, r in zip(names[chunk], pool.map(one, files[chunk])):
                    if isinstance(r, DataError):
                        skipped.append(name)
                        continue
                    out[len(kept)] = r[0]
                    kept.append(name)
                    if r[1]:
                        rgb.append(name)
        if not kept:
            raise DataError(f"{files[0].parent}: no decodable images")
        out.flush()
        if skipped:  # shrink to the kept rows: a new map, filled a chunk at a time
            full, out = out, None
            shrunk = Path(f"{npy}.shrink")
            small = open_memmap(shrunk, mode="w+", dtype=np.uint8, shape=(len(kept), channels, size, size))
            for start in range(0, len(kept), DECODE_CHUNK):
                stop = min(start + DECODE_CHUNK, len(kept))
                small[start:stop] = full[start:stop]
            small.flush()
            small = full = None
            os.replace(shrunk, part)
    except BaseException:
        out = small = full = None  # noqa: F841 - the maps are closed before their files go
        part.unlink(missing_ok=True)
        Path(f"{npy}.shrink").unlink(missing_ok=True)
        raise
    out = None
    if rgb and channels == 1:
        warnings.warn(f"{files[0].parent}: {len(rgb)} colour image(s) converted to grayscale "
                      f"(first: {rgb[0]})", stacklevel=4)
    if skipped:
        warnings.warn(f"{files[0].parent}: skipped {len(skipped)} undecodable image(s) "
                      f"(first: {skipped[0]})", stacklevel=4)
    return kept, skipped


def as_tensor(arr: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # the memmap is read-only and we never write to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)
