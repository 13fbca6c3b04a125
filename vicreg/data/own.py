"""Your own images: a folder per class, or a folder plus a labels CSV, read and checked
(every problem one line naming the file, row or class), then decoded into the cache by
`load_own`; `vicreg check-data` prints all of it.

    data.dataset: folder      root/<class>/<image>          (torchvision's ImageFolder layout)
    data.dataset: csv         root/<data.labels>            columns data.image_column, data.label_column
                              root/<data.images>/<image>    a name without extension is tried with each of EXTENSIONS

Class order: `data.classes`, else the sorted folder names (folder) or label values (csv;
integers numerically). Optional: `data.unlabelled` (a folder only pretraining sees),
`data.test` (a folder `predict` scores), `data.split_column` (csv rows marked "test": no
label, scored by `predict`). Images may be grey or colour, 8- or 16-bit, png, jpeg, tiff
or bmp. This module imports no torch: it runs before any long work starts.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import Config, DataConfig
from ..errors import DataError, raise_first
from .sets import Datasets, ImageSet

EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
GREY_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "LA")


@dataclass
class OwnFiles:
    """What a folder or CSV layout holds: labelled images (path, name, class index), the class
    names, unlabelled and test images, and one line per problem / warning."""

    train: list[Path] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # unique names: the CSV's value, or <class>/<file>
    labels: list[int] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    unlabelled: list[Path] = field(default_factory=list)
    test: list[Path] = field(default_factory=list)
    test_names: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def raise_first(self) -> None:
        raise_first(self.problems)


def _under(root: Path, rel: str | None) -> Path | None:
    return None if rel is None else (Path(rel).expanduser() if Path(rel).is_absolute() else root / rel)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def _class_order(found: list[str], cfg: DataConfig) -> list[str]:
    """data.classes when given, else the found names sorted (numerically when all are integers)."""
    if cfg.classes is not None:
        return list(cfg.classes)
    if found and all(v.lstrip("-").isdigit() for v in found):
        return sorted(set(found), key=int)
    return sorted(set(found))


def _root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise DataError(f"data.root is not set: point --data-root at the folder of your images "
                        f"(data.dataset {cfg.dataset})")
    return Path(cfg.root).expanduser()


def scan_folder(cfg: DataConfig) -> OwnFiles:
    """root/<class>/<image>: one class per sub-folder (the unlabelled/test folders excepted)."""
    root = _root(cfg)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder")
    skip = {p.resolve() for p in (_under(root, cfg.unlabelled), _under(root, cfg.test)) if p is not None}
    folders = sorted(d for d in root.iterdir() if d.is_dir() and d.resolve() not in skip and not d.name.startswith("."))
    out = OwnFiles()
    out.classes = _class_order([d.name for d in folders], cfg)
    index = {c: i for i, c in enumerate(out.classes)}
    for d in folders:
        if d.name not in index:
            out.problems.append(f"{d}: folder {d.name!r} is not among data.classes {list(out.classes)}")
            continue
        for p in _images_in(d):
            if not p.resolve().is_relative_to(root.resolve()):  # a linked file or class folder
                out.problems.append(f"{p}: a link that leads outside {root} ({p.resolve()}); refused: copy the "
                                    f"file in instead")
                continue
            out.train.append(p)
            out.names.append(f"{d.name}/{p.name}")
            out.labels.append(index[d.name])
    if not folders:
        raise DataError(f"{root}: no class folders (expected root/<class>/<image>, torchvision's ImageFolder layout)")
    _extras(root, cfg, out)
    return out


def _find_column(columns: list[str], want: str, key: str, path: Path) -> str:
    for c in columns:
        if c.strip().lower() == want.strip().lower():
            return c
    raise DataError(f"{path}: no column {want!r} ({key}); the columns are {', '.join(repr(c) for c in columns)}")


def _resolve_image(folder: Path, name: str, on_disk: dict[str, Path]) -> Path | None:
    """The file a CSV value names: as written (relative to `folder`), or with an image extension added."""
    if name in on_disk:
        return on_disk[name]
    path = folder / name
    if path.suffix.lower() in EXTENSIONS and path.is_file():
        return path
    for ext in EXTENSIONS:
        for e in (ext, ext.upper()):
            if (name + e) in on_disk:
                return on_disk[name + e]
    return None


def _csv_image(path: Path, folder: Path, line: int, name: str, column: str, seen: dict[str, int],
               on_disk: dict[str, Path]) -> tuple[str | None, Path | None]:
    """A CSV row's image: (the row's problem or None, the file or None: not found). An empty,
    repeated, absolute or '..' name, or a link that leads outside `folder`, is a problem with no file."""
    if not name:
        return f"{path}: row {line}: empty {column!r}", None
    if name in seen:
        return f"{path}: row {line}: duplicate image {name!r} (first on row {seen[name]})", None
    seen[name] = line
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return f"{path}: row {line}: image {name!r} must be a name inside {folder} (no absolute path, no '..')", None
    image = _resolve_image(folder, name, on_disk)
    if image is not None and not image.resolve().is_relative_to(folder.resolve()):
        return (f"{path}: row {line}: image {name!r} is a link that leads outside {folder} ({image.resolve()}); "
                f"refused: copy the file in, or point data.images at its folder"), None
    return None, image


def scan_csv(cfg: DataConfig) -> OwnFiles:
    """root/<labels>.csv with an image and a label column; images under root/<images>."""
    root = _root(cfg)
    if not root.is_dir():
        raise DataError(f"{root}: data root does not exist or is not a folder")
    path = _under(root, cfg.labels)
    if path is None or not path.is_file():
        raise DataError(f"{path}: labels CSV (data.labels) does not exist")
    folder = _under(root, cfg.images) or root
    if not folder.is_dir():
        raise DataError(f"{folder}: images folder (data.images) does not exist")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        image_col = _find_column(columns, cfg.image_column, "data.image_column", path)
        label_col = _find_column(columns, cfg.label_column, "data.label_column", path)
        split_col = _find_column(columns, cfg.split_column, "data.split_column", path) if cfg.split_column else None
        rows = [(line, {k: (v or "").strip() for k, v in r.items() if k is not None})
                for line, r in enumerate(reader, start=2)]
    # Every image file under the folder, by its path relative to it (names may hold sub-folders).
    on_disk = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*")
               if p.is_file() and p.suffix.lower() in EXTENSIONS}
    out = OwnFiles()
    is_test = [split_col is not None and r[split_col].lower() == "test" for _, r in rows]
    out.classes = _class_order([r[label_col] for (_, r), t in zip(rows, is_test) if not t and r[label_col]], cfg)
    index = {c: i for i, c in enumerate(out.classes)}
    seen: dict[str, int] = {}
    used: set[Path] = set()
    for (line, r), test_row in zip(rows, is_test):
        name, label = r[image_col], r[label_col]
        problem, image = _csv_image(path, folder, line, name, image_col, seen, on_disk)
        if image is not None:
            used.add(image)  # it has a row, even a bad one: not an image without a row
        if problem is None and not test_row and label not in index:
            problem = f"{path}: row {line}: label {label!r} is not among the classes ({', '.join(out.classes)})"
        if problem is None and image is None:
            tried = ", ".join(EXTENSIONS)
            problem = f"{path}: row {line}: image {name!r} is not in {folder} (tried the name and {tried})"
        if problem is not None:
            out.problems.append(problem)
        elif test_row:
            out.test.append(image)
            out.test_names.append(name)
        else:
            out.train.append(image)
            out.names.append(name)
            out.labels.append(index[label])
    if not rows:
        out.problems.append(f"{path}: no rows")
    skip = {p.resolve() for p in (_under(root, cfg.unlabelled), _under(root, cfg.test)) if p is not None}
    orphans = sorted(n for n, p in on_disk.items()
                     if p not in used and not any(s in p.resolve().parents for s in skip))
    if orphans:
        out.warnings.append(f"{folder}: {len(orphans)} image(s) with no row in {path.name}, ignored "
                            f"(first: {orphans[0]})")
    _extras(root, cfg, out)
    return out


def _extras(root: Path, cfg: DataConfig, out: OwnFiles) -> None:
    """The unlabelled and test folders, and the checks that need the whole labelled set."""
    for key, rel in (("data.unlabelled", cfg.unlabelled), ("data.test", cfg.test)):
        folder = _under(root, rel)
        if folder is None:
            continue
        if not folder.is_dir():
            out.problems.append(f"{folder}: {key} folder does not exist")
            continue
        found = sorted((p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS),
                       key=lambda p: p.relative_to(folder).as_posix())
        if not found:
            out.problems.append(f"{folder}: {key} folder holds no images ({', '.join(EXTENSIONS)})")
        if key == "data.unlabelled":
            out.unlabelled = found
        else:
            out.test += found
            out.test_names += [p.relative_to(folder).as_posix() for p in found]
    if out.test:  # name order, as the submission file lists them
        order = sorted(range(len(out.test)), key=lambda i: out.test_names[i])
        out.test, out.test_names = [out.test[i] for i in order], [out.test_names[i] for i in order]
    need = cfg.folds + (1 if cfg.holdout > 0 else 0)
    for i, c in enumerate(out.classes):
        n = out.labels.count(i)
        if n < need:
            out.problems.append(f"class {c!r}: {n} labelled image(s), fewer than data.folds ({cfg.folds})"
                                + (" plus one for the hold-out" if cfg.holdout > 0 else "") + f" need ({need})")
    if not out.train:
        out.problems.append(f"{root}: no labelled images found")


def scan(cfg: DataConfig) -> OwnFiles:
    return scan_csv(cfg) if cfg.dataset == "csv" else scan_folder(cfg)


def image_mode(path: Path) -> str | None:
    """PIL's mode from the file's header (cheap: no pixels decoded); None for a file PIL cannot
    open (empty, not an image, a decompression bomb): decoding then reports or skips it, naming
    it (data.skip_bad_images), as check-data does."""
    try:
        with Image.open(path) as img:
            return img.mode
    except Exception:  # PIL raises many kinds for a bad file
        return None


def check(cfg: DataConfig) -> tuple[OwnFiles, list[str]]:
    """The scan plus a decode check of every file and the mix of image modes:
    -> (files, problems), every problem one line. Mixed modes are a warning in files.warnings."""
    files = scan(cfg)
    problems = list(files.problems)
    grey, colour = [], []
    for p in files.train + files.unlabelled + files.test:
        if p.stat().st_size == 0:
            problems.append(f"{p}: empty file")
            continue
        try:
            with Image.open(p) as img:
                mode = img.mode
                img.verify()
        except Exception as e:  # PIL raises many kinds for a bad file
            problems.append(f"{p}: cannot decode image ({type(e).__name__})")
            continue
        (grey if mode in GREY_MODES else colour).append((p, mode))
    if grey and colour:
        files.warnings.append(f"mixed image modes: {len(grey)} grey (first: {grey[0][0]}, {grey[0][1]}) and "
                              f"{len(colour)} colour (first: {colour[0][0]}, {colour[0][1]}); all are read as "
                              f"{'RGB' if colour else 'grey'} unless model.in_channels says otherwise")
    return files, problems


_CHANNELS: dict[str, int] = {}  # per process: a sweep resolves every trial's config


def data_channels(cfg: DataConfig) -> int:
    """1 when every labelled image is grey, else 3 (folder and csv sets; read from the files'
    headers, once per process for the same layout and folder time stamp)."""
    root = _root(cfg)
    key = json.dumps([dataclasses.asdict(cfg), os.stat(root).st_mtime_ns if root.exists() else 0], default=str)
    if key not in _CHANNELS:
        _CHANNELS[key] = channels_of(scan(cfg))
    return _CHANNELS[key]


def channels_of(files: OwnFiles) -> int:
    """Only the labelled images decide (the model is built for what it is scored on); any colour -> 3."""
    modes = [image_mode(p) for p in files.train]
    return 3 if any(m is not None and m not in GREY_MODES for m in modes) else 1


def resolve_channels(cfg: Config) -> Config:
    """`cfg` with model.in_channels pinned to the data's when the config leaves it null."""
    if cfg.model.in_channels is not None:
        return cfg
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, in_channels=data_channels(cfg.data)))


def load_own(cfg: DataConfig, channels: int | None = None) -> Datasets:
    """A folder or CSV set (scanned above): the labelled images, the test images (data.test,
    or CSV rows marked test) and the unlabelled ones, decoded as `channels` (default: the data's)."""
    from .cache import as_tensor, cached_images  # here: the layout checks above load no torch

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
        return ImageSet(as_tensor(arr), None, kept, cfg.dataset, False, skipped, key, source), kept

    train, kept = images("train", files.train, files.names)
    by_name = dict(zip(files.names, files.labels))
    train.labels = np.array([by_name[n] for n in kept], dtype=np.int64)
    train.classes = list(files.classes)
    test = images("test", files.test, files.test_names)
    unlabelled = images("unlabelled", files.unlabelled, [p.name for p in files.unlabelled])
    return Datasets(train, test[0] if test else None, unlabelled[0] if unlabelled else None)
