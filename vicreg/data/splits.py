"""Folds and the hold-out: a stratified hold-out, then stratified k-fold over the rest, stored
beside the study and reused, so every trial scores on the same splits."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import atomic_write, csv_text

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
