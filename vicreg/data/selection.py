"""The images pretraining sees: the labelled CV images, and the hold-out, test and unlabelled
images only when the config says so; as Rows (an index into the caches, not a copy) with a
record of how many of each (vicreg/seen.py says it in words)."""

from __future__ import annotations

import numpy as np
import torch

from ..config import DataConfig
from .rows import Rows
from .sets import Datasets, ImageSet
from .splits import HOLDOUT


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
