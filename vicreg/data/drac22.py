"""The DRAC22 Task 3 folder layout: where the images and the labels CSV are, read and
checked (every problem one line naming the file), and `load_drac22`, which decodes it into the
cache. The synthetic generator (synthetic.py) writes this layout too.

    <root>/C. Diabetic Retinopathy Grading/
        1. Original Images/a. Training Set/*.png     the labelled UW-OCTA images (611)
        1. Original Images/b. Testing Set/*.png      the challenge's unlabelled test set
        2. Groundtruths/a. DRAC2022_ ... Training Labels.csv   image name, DR grade (0, 1, 2)
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import DataConfig
from ..errors import DataError, raise_first
from .sets import Datasets, ImageSet, data_root

TASK_DIR = "C. Diabetic Retinopathy Grading"
TRAIN_DIR = Path("1. Original Images/a. Training Set")
TEST_DIR = Path("1. Original Images/b. Testing Set")
LABELS_CSV = Path("2. Groundtruths/a. DRAC2022_ Diabetic Retinopathy Grading_Training Labels.csv")
NAME_COL, GRADE_COL = "image name", "DR grade"


def find_task_dir(root: str | os.PathLike) -> Path:
    """Accept the downloaded folder or `C. Diabetic Retinopathy Grading` itself."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: data root does not exist")
    if (root / TASK_DIR).is_dir():
        return root / TASK_DIR
    if (root / "1. Original Images").is_dir() or root.name == TASK_DIR:
        return root
    raise DataError(f"{root}: not a DRAC22 Task 3 layout (expected folder '{TASK_DIR}' or "
                    f"'1. Original Images' inside)")


def read_labels(csv_path: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """Rows of the labels CSV as (image name, grade), and one line per bad row."""
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: labels CSV missing")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        if NAME_COL not in cols or GRADE_COL not in cols:
            raise DataError(f"{csv_path}: expected columns '{NAME_COL}' and '{GRADE_COL}', "
                            f"found {cols}")
        rows, problems, seen = [], [], set()
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            name, grade = row.get(NAME_COL, ""), row.get(GRADE_COL, "")
            if grade not in ("0", "1", "2"):
                problems.append(f"{csv_path}: row {line}: grade {grade!r} is not 0, 1 or 2")
            elif name in seen:
                problems.append(f"{csv_path}: row {line}: duplicate image name {name!r}")
            else:
                rows.append((name, int(grade)))
            seen.add(name)
    if not rows and not problems:
        problems.append(f"{csv_path}: no rows")
    return rows, problems


@dataclass
class Drac22Files:
    train: list[Path]
    grades: list[int]
    test: list[Path]
    problems: list[str]  # errors, one line each
    warnings: list[str]

    def raise_first(self) -> None:
        raise_first(self.problems)


def scan_drac22(root: str | os.PathLike, test_root: str | os.PathLike | None = None) -> Drac22Files:
    """Check the layout and the CSV against the files (cheap: no decoding).

    A broken layout raises at once; row-level problems are collected so that
    `check-data` can list them all.
    """
    task = find_task_dir(root)
    train_dir = task / TRAIN_DIR
    if not train_dir.is_dir():
        raise DataError(f"{task}: expected folder '{TRAIN_DIR}' is missing")
    if not (task / LABELS_CSV).is_file():
        raise DataError(f"{task / LABELS_CSV}: labels CSV missing")
    rows, problems = read_labels(task / LABELS_CSV)
    on_disk = {p.name for p in train_dir.glob("*.png")}
    files, grades = [], []
    for name, grade in rows:
        path = train_dir / name
        if name not in on_disk:
            problems.append(f"{task / LABELS_CSV}: image {name!r} has a row but is not in "
                            f"{train_dir}")
            continue
        if path.stat().st_size == 0:
            problems.append(f"{path}: empty file")
            continue
        files.append(path)
        grades.append(grade)
    notes = []
    extra = sorted(on_disk - {n for n, _ in rows})
    if extra:
        notes.append(f"{train_dir}: {len(extra)} image(s) with no CSV row, ignored "
                     f"(first: {extra[0]})")
    test_task = find_task_dir(test_root) if test_root else task
    test_dir = test_task / TEST_DIR
    test = sorted(test_dir.glob("*.png"), key=_name_key) if test_dir.is_dir() else []
    if not test:
        notes.append(f"{test_dir}: no test images found (only needed for predictions and "
                     f"data.include_test_in_pretrain)")
    return Drac22Files(files, grades, test, problems, notes)


def check_drac22(root: str | os.PathLike, test_root: str | os.PathLike | None = None
                 ) -> tuple[Drac22Files, list[str]]:
    """Full check for users: the scan plus a decode check of every file (PIL verify).

    Returns (scan, problems) with every problem as one line.
    """
    files = scan_drac22(root, test_root)
    problems = list(files.problems)
    for p in files.train + files.test:
        if p.stat().st_size == 0:
            problems.append(f"{p}: empty file")
            continue
        try:
            with Image.open(p) as img:
                img.verify()
        except Exception as e:  # PIL raises many kinds for a bad file
            problems.append(f"{p}: cannot decode image ({type(e).__name__})")
    return files, problems


def _name_key(p: Path) -> tuple[int, str]:
    """Numeric order for names like '161.png' < '1312.png'."""
    return (int(p.stem), p.name) if p.stem.isdigit() else (1 << 30, p.name)


def load_drac22(cfg: DataConfig, synthetic: bool = False) -> Datasets:
    from .cache import as_tensor, cached_images  # here: the layout checks above load no torch

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
    train = ImageSet(as_tensor(arr), np.array([grade[n] for n in kept], dtype=np.int64), kept,
                     name, synthetic, skipped, key, str(files.train[0].parent.resolve()))
    test = None
    if files.test:
        arr, kept, skipped, key = cached_images(f"{name}-test", files.test, cfg.image_size, 1,
                                                cfg.cache_dir, cfg.skip_bad_images)
        test = ImageSet(as_tensor(arr), None, kept, name, synthetic, skipped, key,
                        str(files.test[0].parent.resolve()))
    return Datasets(train, test)
