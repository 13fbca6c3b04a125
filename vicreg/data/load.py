"""`load_datasets(cfg)`: the configured set, checked and decoded (or read from the cache), and
the profile of what a run trained and was scored on."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .bundled import load_digits, load_textures
from .cifar10 import load_cifar10
from .drac22 import load_drac22
from .own import load_own
from .sets import Datasets
from .splits import HOLDOUT, shuffled_labels


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
