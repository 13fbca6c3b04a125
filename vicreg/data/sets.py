"""What a loader returns: ImageSet (uint8 images, labels, names, where from) and Datasets
(labelled, test, unlabelled), and where a set's folder is."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import DataConfig
from ..errors import DataError

if TYPE_CHECKING:  # annotations only: the layout checks that use data_root load no torch
    import torch

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
