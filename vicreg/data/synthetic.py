"""A synthetic dataset in the exact DRAC22 Task 3 layout, for demos and tests.

Grade-dependent structure in the spirit of UW-OCTA angiograms: every image has a
branching vessel network; higher grades have more and larger dark non-perfusion areas,
and grade 2 (PDR) adds bright tangled neovascular tufts. Each image's mean brightness
and contrast are then set to random values drawn independently of the grade, so the
label cannot be read off one global pixel statistic: a model has to see the structures.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..config import DataConfig
from .drac22 import LABELS_CSV, TASK_DIR, TEST_DIR, TRAIN_DIR

REAL_COUNTS = (329, 212, 70)  # the real training set's grades 0/1/2 (611 images)
REAL_TEST_COUNT = 386


def _vessels(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """Branching random-walk vessels from the border towards the centre."""
    s = size / 256
    stack = []
    for _ in range(rng.integers(4, 7)):
        angle = rng.uniform(0, 2 * math.pi)
        x, y = size / 2 + math.cos(angle) * size * 0.55, size / 2 + math.sin(angle) * size * 0.55
        stack.append((x, y, angle + math.pi + rng.normal(0, 0.3), 4.0 * s, 0))
    while stack:
        x, y, a, w, depth = stack.pop()
        for _ in range(int(rng.integers(6, 14))):
            a += rng.normal(0, 0.25)
            nx, ny = x + math.cos(a) * 9 * s, y + math.sin(a) * 9 * s
            draw.line([(x, y), (nx, ny)], fill=int(rng.integers(170, 230)), width=max(1, round(w)))
            x, y = nx, ny
            if depth < 4 and rng.random() < 0.18:
                stack.append((x, y, a + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0), w * 0.7, depth + 1))


def _non_perfusion(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, grade: int) -> None:
    """Dark blobs: capillary drop-out, more and larger with grade."""
    count = [0, rng.integers(2, 4), rng.integers(3, 6)][grade]
    radius = [0.0, 0.11, 0.15][grade] * size
    for _ in range(int(count)):
        cx, cy = rng.uniform(0.15, 0.85, 2) * size
        r = radius * rng.uniform(0.6, 1.4)
        rx, ry = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.7, 1.3)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=int(rng.integers(5, 25)))


def _tufts(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, grade: int) -> None:
    """Bright tangles of short, tightly curling segments (neovascularisation, PDR)."""
    if grade < 2:
        return
    s = size / 256
    for _ in range(int(rng.integers(3, 6))):
        x, y = rng.uniform(0.2, 0.8, 2) * size
        a = rng.uniform(0, 2 * math.pi)
        for _ in range(60):
            a += rng.normal(0, 1.2)
            nx, ny = x + math.cos(a) * 4 * s, y + math.sin(a) * 4 * s
            draw.line([(x, y), (nx, ny)], fill=255, width=max(1, round(2 * s)))
            x, y = nx, ny


def synthetic_image(grade: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One grayscale image (size, size) uint8 of the given grade."""
    # Capillary background: smoothed noise.
    low = rng.normal(60, 25, (max(4, size // 8),) * 2).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    _vessels(draw, rng, size)
    _non_perfusion(draw, rng, size, grade)  # after the vessels: drop-out hides capillaries
    _tufts(draw, rng, size, grade)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(0.5, size / 512)))
    a = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (size, size))
    # Mean and contrast drawn independently of the grade (see module docstring).
    a = (a - a.mean()) / (a.std() + 1e-6) * rng.uniform(35, 55) + rng.uniform(70, 110)
    return a.clip(0, 255).astype(np.uint8)


def _names(count: int, high: int, rng: np.random.Generator, exclude: set[int] = frozenset()) -> list[str]:
    """Sorted numeric names like the real ones: '001.png' .. and 4 digits above 999."""
    pool = np.array([i for i in range(1, max(high, count + len(exclude)) + 1) if i not in exclude])
    picked = np.sort(rng.choice(pool, size=count, replace=False))
    return [f"{i:03d}.png" for i in picked]


def grade_counts(count: int) -> list[int]:
    """Split `count` in the real training set's 329/212/70 proportions."""
    total = sum(REAL_COUNTS)
    counts = [round(count * c / total) for c in REAL_COUNTS]
    counts[0] += count - sum(counts)
    return counts


def make_synthetic(out: str | Path, count: int = 611, size: int = 1024, seed: int = 0,
                   test_count: int | None = None) -> Path:
    """Write a synthetic DRAC22 Task 3 folder under `out`; returns the task folder.

    `count` labelled training images in the real grade balance, `test_count` unlabelled
    test images (default: the real 386:611 ratio). Deterministic for a given seed.
    """
    if count < 3:
        raise ValueError(f"--count {count}: need at least 3 images (one per grade)")
    rng = np.random.default_rng(seed)
    task = Path(out) / TASK_DIR
    train_dir, test_dir = task / TRAIN_DIR, task / TEST_DIR
    csv_path = task / LABELS_CSV
    for d in (train_dir, test_dir, csv_path.parent):
        d.mkdir(parents=True, exist_ok=True)
    test_count = round(count * REAL_TEST_COUNT / sum(REAL_COUNTS)) if test_count is None else test_count
    train_names = _names(count, 921, rng)
    grades = np.repeat([0, 1, 2], grade_counts(count))
    rng.shuffle(grades)
    used = {int(n[:-4]) for n in train_names}
    test_names = _names(test_count, 1312, rng, exclude=used) if test_count else []
    rows = ["image name,DR grade"]
    for name, grade in zip(train_names, grades):
        Image.fromarray(synthetic_image(int(grade), size, rng)).save(train_dir / name)
        rows.append(f"{name},{int(grade)}")
    for name in test_names:
        Image.fromarray(synthetic_image(int(rng.choice(3, p=[0.54, 0.35, 0.11])), size, rng)
                        ).save(test_dir / name)
    csv_path.write_text("\n".join(rows) + "\n")
    return task


def ensure_synthetic(cfg: DataConfig) -> None:
    """The command line's and the sweep's pre-flight step: the synthetic dataset at its default
    folder is made there on first use (data.synthetic_count/size/seed); anything else is left
    alone. A data.root the user named that does not exist is an error, not a place to
    generate into: a mistyped --data-root must not become a data set. (The loader never
    writes data: vicreg/data/drac22.py reads what is there.)"""
    if cfg.dataset != "synthetic":
        return
    from ..errors import DataError
    from .sets import data_root  # here, not at the top: drawing images needs no torch

    root = data_root(cfg)
    if not root.exists():
        if cfg.root:
            raise DataError(f"data.root {root} does not exist; to make a synthetic set there, run "
                            f"vicreg make-synthetic --out {root}")
        make_synthetic(root, count=cfg.synthetic_count, size=cfg.synthetic_size, seed=cfg.synthetic_seed)
