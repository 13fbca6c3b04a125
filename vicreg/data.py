"""Datasets as uint8 tensors: DRAC22 Task 3, CIFAR-10, the synthetic DRAC22-format set, and
scikit-learn's digits (1,797 real 8x8 scans of handwritten digits that ship inside
scikit-learn: the one real image set here that needs no download and no folder).

Images are decoded and resized once per (dataset, image size) into a .npy file in the
cache folder, written atomically under a file lock, and memory-mapped afterwards, so
epochs, trials and worker processes share one decode. Layout facts: DRAC22 as
distributed (grand-challenge), CIFAR-10 as `cifar-10-batches-py`.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import pickle
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .batches import Rows
from .config import DataConfig
from .drac22 import scan_drac22
from .errors import DataError  # noqa: F401 - DataError is part of this module's API
from .io import atomic_write, csv_text, digest, file_lock
from .seen import describe_pretrain, pretrain_note  # noqa: F401 - part of this module's API

CACHE_VERSION = 1
DEFAULT_SYNTHETIC_ROOT = "data/synthetic-drac22"


@dataclass
class ImageSet:
    """uint8 images (N, C, H, W) with optional integer labels (N,), in name order."""

    images: torch.Tensor
    labels: np.ndarray | None
    names: list[str]
    name: str  # "drac22", "synthetic-drac22", "cifar10", "digits"
    synthetic: bool = False
    skipped: list[str] = field(default_factory=list)  # undecodable files left out
    # What identifies these images: the decode cache's key (every source file's name, size
    # and mtime, the image size) for files, a hash of the pixels otherwise; and where from.
    digest: str = ""
    source: str = ""
    # The same images at data.crop_source_size (pretraining crops its views from these), or None.
    large: torch.Tensor | None = None
    classes: list[str] | None = None  # the class names in label order (folder/csv sets)


@dataclass
class Datasets:
    train: ImageSet  # labelled
    test: ImageSet | None  # unlabelled (DRAC22) or labelled (CIFAR-10 test batch)
    unlabelled: ImageSet | None = None  # images only pretraining sees (folder/csv: data.unlabelled)


# --- decoding and the cache --------------------------------------------------------


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


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # the memmap is read-only and we never write to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(arr)


# --- the datasets ------------------------------------------------------------------


def data_root(cfg: DataConfig) -> Path:
    """Where the dataset is: `data.root`, else $DRAC22_ROOT (drac22), else the synthetic default."""
    if cfg.root:
        return Path(cfg.root).expanduser()
    if cfg.dataset == "drac22":
        env = os.environ.get("DRAC22_ROOT")
        if env:
            return Path(env).expanduser()
        raise DataError("data.root is not set: point --data-root (or DRAC22_ROOT) at the DRAC22 "
                        "download (drac22.grand-challenge.org), or try the synthetic set "
                        "(dataset: synthetic)")
    if cfg.dataset == "synthetic":
        return Path(DEFAULT_SYNTHETIC_ROOT)
    if cfg.dataset in ("folder", "csv"):
        raise DataError(f"data.root is not set: point --data-root at the folder of your images "
                        f"(data.dataset {cfg.dataset})")
    raise DataError("data.root is not set: point it at the folder holding cifar-10-batches-py")


def load_drac22(cfg: DataConfig, synthetic: bool = False) -> Datasets:
    root = data_root(cfg)
    if synthetic and not root.exists():
        raise DataError(f"{root}: no synthetic DRAC22-format set here; make it with vicreg make-synthetic "
                        f"--out {root} (vicreg pretrain and the sweeps make the default one themselves)")
    files = scan_drac22(root, cfg.test_root)
    files.raise_first()
    for note in files.warnings:
        if "no test images" not in note:  # a missing test set only matters below, when asked for
            warnings.warn(note, stacklevel=2)
    if cfg.include_test_in_pretrain and not files.test:
        raise DataError(f"{root}: data.include_test_in_pretrain is set but no test images found")
    name = "synthetic-drac22" if synthetic else "drac22"
    arr, kept, skipped, key = cached_images(f"{name}-train", files.train, cfg.image_size, 1,
                                            cfg.cache_dir, cfg.skip_bad_images)
    grade = {p.name: g for p, g in zip(files.train, files.grades)}
    train = ImageSet(_as_tensor(arr), np.array([grade[n] for n in kept], dtype=np.int64), kept,
                     name, synthetic, skipped, key, str(files.train[0].parent.resolve()))
    test = None
    if files.test:
        arr, kept, skipped, key = cached_images(f"{name}-test", files.test, cfg.image_size, 1,
                                                cfg.cache_dir, cfg.skip_bad_images)
        test = ImageSet(_as_tensor(arr), None, kept, name, synthetic, skipped, key,
                        str(files.test[0].parent.resolve()))
    return Datasets(train, test)


def _cifar_dir(root: Path) -> Path:
    d = root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"
    need = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in need if not (d / n).is_file()]
    if missing:
        raise DataError(f"{d}: CIFAR-10 not found (missing {', '.join(missing)}); put the "
                        f"extracted 'cifar-10-batches-py' folder (data_batch_1..5, test_batch) "
                        f"there, as torchvision's CIFAR10 reads it; it is never downloaded")
    return d


def _numpy_reconstruct() -> Any:
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    return core.multiarray._reconstruct


class CifarUnpickler(pickle.Unpickler):
    """Reads a CIFAR-10 python batch, a pickle by format, with only what the format holds (as
    torch.load(weights_only=True) does for checkpoints): dicts, lists, strings, bytes, numbers and
    numpy arrays. Any other class or function the file names is refused before it is called, so
    a crafted batch runs no code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused: it names {module}.{name}, which a CIFAR-10 batch never holds "
                                         f"(reading it could run code)")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return super().find_class(module, name)


def _read_cifar_batches(d: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for n in names:
        with open(d / n, "rb") as f:
            try:
                batch = CifarUnpickler(f, encoding="latin1").load()
                if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
                    raise ValueError("no 'data' and 'labels'")
            except pickle.UnpicklingError as e:
                raise DataError(f"{d / n}: {e}") from None
            except Exception as e:  # truncated, not a pickle, other keys: one line
                raise DataError(f"{d / n}: not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
        data, labels = batch["data"], batch["labels"]
        _check_cifar_batch(d / n, data, labels)
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(labels, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _check_cifar_batch(path: Path, data: Any, labels: Any) -> None:
    """The format's shapes before any array is built from them: `data` a uint8 ndarray
    (N, 3072), `labels` N integers in 0..9. A crafted batch of nested shared lists took 7 GB
    when turned into an array; now it is one line."""
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), not a {type(data).__name__}"
                        + (f" of shape {shape} and dtype {data.dtype}" if shape is not None else ""))
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != data.shape[0]:
        got = len(labels) if isinstance(labels, (list, np.ndarray)) else type(labels).__name__
        raise DataError(f"{path}: 'labels' must be {data.shape[0]} integers (one per image), got {got}")
    for i, v in enumerate(labels):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 9:
            what = repr(v)[:40] if isinstance(v, (int, np.integer, str)) else f"a {type(v).__name__}"
            raise DataError(f"{path}: 'labels' must be integers in 0..9; label {i} is {what}")


def load_cifar10(cfg: DataConfig) -> Datasets:
    d = _cifar_dir(data_root(cfg))
    sets = []
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        x, y = _read_cifar_batches(d, names)
        t = torch.from_numpy(x)
        if cfg.image_size != 32:
            t = torch.nn.functional.interpolate(t.float(), size=cfg.image_size, mode="bilinear",
                                                antialias=True).round().clamp(0, 255).to(torch.uint8)
        sets.append(ImageSet(t, y, [f"{split}-{i:05d}" for i in range(len(y))], "cifar10",
                             digest=digest(t), source=str(d.resolve())))
    return Datasets(*sets)


def load_digits(cfg: DataConfig) -> Datasets:
    """scikit-learn's digits (UCI optdigits: 1,797 scans, 10 classes, 17 grey levels at 8x8),
    as uint8 (N, 1, size, size) upsampled bilinearly; no test set (the hold-out plays it)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) * (255 / 16)).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=cfg.image_size, mode="bilinear", align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8).contiguous()
    labels = np.asarray(bunch.target, dtype=np.int64)
    names = [f"digit-{i:04d}" for i in range(len(labels))]
    return Datasets(ImageSet(images, labels, names, "digits", digest=digest(images),
                             source="sklearn.datasets.load_digits"), None)


def load_own(cfg: DataConfig, channels: int | None = None) -> Datasets:
    """A folder or CSV set (vicreg/layouts.py): the labelled images, the test images (data.test,
    or CSV rows marked test) and the unlabelled ones, decoded as `channels` (default: the data's)."""
    from .layouts import channels_of, scan

    files = scan(cfg)
    files.raise_first()
    for note in files.warnings:
        warnings.warn(note, stacklevel=3)
    channels = channels or channels_of(files)  # from this scan: the layout is not read twice
    source = str(Path(cfg.root).expanduser().resolve())
    label = f"{cfg.dataset}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"

    def images(part: str, paths: list[Path], names: list[str]) -> tuple[ImageSet, list[str]] | None:
        if not paths:
            return None
        arr, kept, skipped, key = cached_images(f"{label}-{part}", paths, cfg.image_size, channels, cfg.cache_dir,
                                                cfg.skip_bad_images, names)
        return ImageSet(_as_tensor(arr), None, kept, cfg.dataset, False, skipped, key, source), kept

    train, kept = images("train", files.train, files.names)
    by_name = dict(zip(files.names, files.labels))
    train.labels = np.array([by_name[n] for n in kept], dtype=np.int64)
    train.classes = list(files.classes)
    test = images("test", files.test, files.test_names)
    unlabelled = images("unlabelled", files.unlabelled, [p.name for p in files.unlabelled])
    return Datasets(train, test[0] if test else None, unlabelled[0] if unlabelled else None)


TEXTURES = ("brick.png", "grass.png", "gravel.png", "moon.png", "ihc.png", "cell.png")
TEXTURE_TILE = 32


def load_textures(cfg: DataConfig) -> Datasets:
    """Real photographs that ship inside scikit-image (skimage/data, read as files: no
    download, no skimage import): three textures (brick, grass, gravel), the Moon's surface,
    an immunohistochemistry slide (ihc, made grey) and a microscopy image (cell), each cut
    into non-overlapping 32 px tiles, 256 per source (the first, in reading order); the class is
    the source. -> uint8 (1536, 1, size, size), resized from 32 px (area-averaged, or bilinear
    upwards). Neighbouring tiles of one photograph are alike, so the hold-out is easier than
    a new photograph would be; the table's comparisons all share that."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.dataset=textures reads scikit-image's bundled photographs: pip install scikit-image "
                        "(or the bench extra: pip install -e '.[bench]')")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    tiles, labels = [], []
    for label, name in enumerate(TEXTURES):
        with Image.open(folder / name) as im:
            a = np.asarray(im.convert("L"))
        t = TEXTURE_TILE
        rows, cols = a.shape[0] // t, a.shape[1] // t
        cut = a[:rows * t, :cols * t].reshape(rows, t, cols, t).transpose(0, 2, 1, 3).reshape(-1, t, t)[:256]
        tiles.append(cut)
        labels += [label] * len(cut)
    x = torch.from_numpy(np.concatenate(tiles)).unsqueeze(1)
    if cfg.image_size != TEXTURE_TILE:
        down = cfg.image_size < TEXTURE_TILE
        x = torch.nn.functional.interpolate(x.float(), size=cfg.image_size, mode="area" if down else "bilinear",
                                            align_corners=None if down else False).round().clamp(0, 255)
    images = x.to(torch.uint8).contiguous()
    names = [f"{TEXTURES[y].split('.')[0]}-{i:03d}" for i, y in enumerate(labels)]
    return Datasets(ImageSet(images, np.asarray(labels, dtype=np.int64), names, "textures", digest=digest(images),
                             source=str(folder)), None)


def profile(data: Datasets, folds: np.ndarray, pretrain_record: dict) -> dict:
    """What a run trained and was scored on, for its MLflow dataset input: image count per
    grade, image size and channels, and the split (pretraining set, CV folds, hold-out)."""
    train = data.train
    grades = {str(int(g)): int(n) for g, n in zip(*np.unique(train.labels, return_counts=True))}
    return {"images": int(len(train.names)), "per_grade": grades, "image_size": int(train.images.shape[-1]),
            "channels": int(train.images.shape[1]), "test_images": int(len(data.test.names)) if data.test else 0,
            "cv_folds": int(folds[folds != HOLDOUT].max()) + 1, "cv_images": int((folds != HOLDOUT).sum()),
            "holdout_images": int((folds == HOLDOUT).sum()),
            "pretraining_images": int(sum(v for v in pretrain_record.values())), **pretrain_record,
            **({"classes": list(train.classes)} if train.classes else {})}


def _load(cfg: DataConfig, channels: int | None) -> Datasets:
    if cfg.dataset in ("folder", "csv"):
        return load_own(cfg, channels)
    if cfg.dataset == "cifar10":
        return load_cifar10(cfg)
    if cfg.dataset == "digits":
        return load_digits(cfg)
    if cfg.dataset == "textures":
        return load_textures(cfg)
    return load_drac22(cfg, synthetic=cfg.dataset == "synthetic")


def load_datasets(cfg: DataConfig, channels: int | None = None) -> Datasets:
    """The configured dataset, checked and decoded (or read from the cache), also at
    data.crop_source_size when set (`ImageSet.large`); with data.shuffle_labels, the labels
    permuted (the null test). `channels` (model.in_channels) sets how a folder/csv set is
    decoded (default: as the data is: grey, or RGB when any image is in colour)."""
    data = _load(cfg, channels)
    if cfg.crop_source_size:
        big = _load(dataclasses.replace(cfg, image_size=cfg.crop_source_size), channels)
        for small, large in ((data.train, big.train), (data.test, big.test), (data.unlabelled, big.unlabelled)):
            if small is not None and large is not None:
                if large.names != small.names:  # a file changed between the two reads
                    raise DataError(f"{small.source}: the images changed while being read; run again")
                small.large = large.images
    if cfg.shuffle_labels:
        data.train.labels = shuffled_labels(data.train.labels, cfg.fold_seed)
    return data


# --- folds and the hold-out -----------------------------------------------------------

HOLDOUT = -1  # the fold index of hold-out images: in no CV fold, seen by no selection


def shuffled_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """The null test's labels (data.shuffle_labels): a seeded permutation of the real ones."""
    return np.random.default_rng(seed).permutation(labels)


def _settings_line(k: int, seed: int, holdout: float) -> str:
    return f"# folds={k} seed={seed} holdout={holdout:g}"


def make_folds(names: list[str], labels: np.ndarray, k: int, seed: int,
               path: str | os.PathLike | None = None, holdout: float = 0.0) -> np.ndarray:
    """Fold index (N,) per image: a stratified hold-out (index HOLDOUT = -1, fraction
    `holdout`), then stratified k-fold over the rest; stored as CSV at `path` and reused.

    Reuse is what makes every trial of a study score on the same splits. A stored file
    that no longer matches the images (names, labels) or was made with another k, seed or
    hold-out fraction is an error naming it, not silently reused or redone.
    """
    from sklearn.model_selection import StratifiedKFold, train_test_split

    want = _settings_line(k, seed, holdout)
    if path is not None and Path(path).is_file():
        try:
            first, _, body = Path(path).read_text(encoding="utf-8").partition("\n")
        except UnicodeDecodeError:
            first, body = "", ""
        if not first.startswith("# folds="):
            raise DataError(f"{path}: not a folds file of this version (no '# folds=' settings line); "
                            f"delete it to make new folds")
        if first != want:
            raise DataError(f"{path}: stored folds were made with '{first[2:]}', the config asks "
                            f"'{want[2:]}'; delete the file or use another study folder")
        try:
            rows = list(csv.DictReader(io.StringIO(body)))  # quoted names may hold commas and newlines
            stored = {r["image name"]: (int(r["label"]), int(r["fold"])) for r in rows}
        except (KeyError, TypeError, ValueError, csv.Error):
            raise DataError(f"{path}: cannot be parsed as a folds file (image name,label,fold); "
                            f"delete it to make new folds") from None
        if set(stored) != set(names) or any(stored[n][0] != int(y) for n, y in zip(names, labels)):
            raise DataError(f"{path}: stored folds do not match this dataset's images; delete it "
                            f"or use another study")
        return np.array([stored[n][1] for n in names], dtype=np.int64)
    folds = np.full(len(names), HOLDOUT, dtype=np.int64)
    cv = np.arange(len(names))
    if holdout > 0:
        cv, _ = train_test_split(cv, test_size=holdout, stratify=labels, random_state=seed)
        cv = np.sort(cv)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (_, val) in enumerate(skf.split(np.zeros(len(cv)), labels[cv])):
        folds[cv[val]] = i
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        rows = [["image name", "label", "fold"], *([n, int(y), int(f)] for n, y, f in zip(names, labels, folds))]
        atomic_write(Path(path), want + "\n" + csv_text(rows))
    return folds


def pretrain_selection(data: Datasets, folds: np.ndarray, cfg: DataConfig) -> tuple[Rows, dict]:
    """The images pretraining sees, and a record of which: labelled CV images always, the
    hold-out only with data.holdout_in_pretrain, the unlabelled/test images only with
    data.include_test_in_pretrain. -> (uint8 Rows (M, C, H, W): an index into the memory-mapped
    caches, not a copy; {"pretrain.*": ...})."""
    keep = folds != HOLDOUT if not cfg.holdout_in_pretrain else np.ones(len(folds), dtype=bool)

    def source(s: ImageSet) -> torch.Tensor:  # the crop source: the larger cache when there is one
        return s.large if cfg.crop_source_size and s.large is not None else s.images

    parts: list[tuple[torch.Tensor, np.ndarray | None]] = [(source(data.train), np.flatnonzero(keep))]
    with_test = cfg.include_test_in_pretrain and data.test is not None
    if with_test:
        parts.append((source(data.test), None))
    if data.unlabelled is not None:  # there only to be pretrained on
        parts.append((source(data.unlabelled), None))
    n_hold = int((folds == HOLDOUT).sum())
    record = {"pretrain.labelled_cv": int((folds != HOLDOUT).sum()),
              "pretrain.holdout": n_hold if cfg.holdout_in_pretrain else 0,
              "pretrain.test": int(data.test.images.shape[0]) if with_test else 0}
    if data.unlabelled is not None:
        record["pretrain.unlabelled"] = int(data.unlabelled.images.shape[0])
    return Rows(tuple(parts)), record
