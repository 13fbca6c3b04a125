"""The images: every source decoded once into the cache, split into folds and a hold-out,
and the selection pretraining sees.

  sets      - ImageSet / Datasets: what a loader returns; where a set's folder is
  cache     - the decode cache: each file decoded and resized once, memory-mapped after
  drac22    - DRAC22 Task 3: its folder layout, checked, and its loader
  own       - your own set: a folder of class folders or a CSV of names and labels
  cifar10   - CIFAR-10's python batches, read without running code
  bundled   - digits (scikit-learn) and texture tiles (scikit-image): sets with no download
  synthetic - the synthetic DRAC22-format generator
  load      - load_datasets(cfg): the configured set; its profile for MLflow
  splits    - folds and the hold-out, stored beside the study and reused
  selection - the images pretraining sees, as Rows
  rows      - Rows (a selection as an index, not a copy); on the device or streamed

``from vicreg.data import load_datasets, make_folds, pretrain_selection`` is the public way in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names resolved on first use (PEP 562), so that importing a torch-free part (drac22, own,
# synthetic: what a --dry-run worker and check-data use) does not load torch through this file.
_HOME = {"load_datasets": "load", "profile": "load", "Rows": "rows", "pretrain_selection": "selection",
         "Datasets": "sets", "ImageSet": "sets", "data_root": "sets", "HOLDOUT": "splits", "make_folds": "splits",
         "shuffled_labels": "splits"}
__all__ = ["Datasets", "HOLDOUT", "ImageSet", "Rows", "data_root", "load_datasets", "make_folds", "pretrain_selection",
           "profile", "shuffled_labels"]  # = sorted(_HOME), written out for linters

if TYPE_CHECKING:
    from .load import load_datasets, profile
    from .rows import Rows
    from .selection import pretrain_selection
    from .sets import Datasets, ImageSet, data_root
    from .splits import HOLDOUT, make_folds, shuffled_labels


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'vicreg.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
