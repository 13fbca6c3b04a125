"""`evaluate(encoder, EvalData, cfg) -> EvalReport`: the protocol over the study's stored folds."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from ..augment import channel_stats
from ..config import EvalConfig, Protocol, names
from ..data import HOLDOUT
from ..data.rows import Rows
from .features import cv_stats, features_on_disk
from .heads import FeatureSplit, FitSpec, ImageSplit, finetune, fit_head
from .metrics import scores
from .report import EvalReport, FoldResult


@dataclass
class EvalData:
    """What an evaluation scores: uint8 `images` (N, C, H, W), `labels` (N,), `folds` (N,)
    (each image's validation fold, or HOLDOUT for the hold-out: vicreg.data.make_folds),
    optional unlabelled `test_images` that every fold's model also predicts, and the primary
    `metric` (kappa or f1: vicreg.config.primary_metric), on which an inner split stops early."""

    images: torch.Tensor
    labels: np.ndarray
    folds: np.ndarray
    test_images: torch.Tensor | None = None
    metric: str = "kappa"


def fold_split(folds: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold k's (training, validation) image indices: training is every other CV fold, never
    the hold-out. (The null test's positive control patches this to leak, tests/test_null.py.)"""
    return np.flatnonzero((folds != HOLDOUT) & (folds != k)), np.flatnonzero(folds == k)


def _fold(encoder: nn.Module, k: int, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
          data: EvalData, cfg: EvalConfig, device: torch.device, score_holdout: bool
          ) -> tuple[FoldResult, np.ndarray, int]:
    """Fold k's model, fitted and scored -> (its result, its validation rows, its training count).
    `inputs`: (x, x_flip, x_test), features for the frozen protocols, else the images. Every side
    is Rows of x: an index, not a copy."""
    (x, x_flip, x_test), labels, folds = inputs, data.labels, data.folds
    frozen = cfg.protocol in ("linear", "head")
    tr, va = fold_split(folds, k)
    mean = std = None
    if not frozen:  # fine-tuning: normalised with the training part's statistics only
        mean, std = channel_stats(Rows.of((x, tr)))
    sets: dict[str, torch.Tensor | Rows] = {}
    if x_test is not None:
        sets["test"] = x_test
    hold = np.flatnonzero(folds == HOLDOUT)
    if score_holdout and len(hold):
        sets["holdout"] = Rows.of((x, hold))
    side = FeatureSplit if frozen else ImageSplit
    spec = FitSpec(int(labels.max()) + 1, cfg, cfg.protocol, device, k, predict_sets=sets, metric=data.metric)
    if cfg.patience > 0:  # early stopping on an inner split of the training fold only
        tr, inner = train_test_split(tr, test_size=cfg.inner_val, stratify=labels[tr],
                                     random_state=cfg.seed * 1000 + k)
        spec.select = side(Rows.of((x, inner)), labels[inner])
    val = side(Rows.of((x, va)), labels[va])
    if frozen:
        res = fit_head(FeatureSplit(Rows.of((x, tr)), labels[tr], Rows.of((x_flip, tr))), val, spec)
    else:
        res = finetune(encoder, ImageSplit(Rows.of((x, tr)), labels[tr], mean=mean, std=std), val, spec)
        res.encoder = None  # the report keeps scores, not k copies of the network
    return res, va, len(tr)


def evaluate(encoder: nn.Module, data: EvalData, cfg: EvalConfig, device: torch.device | str = "cpu",
             label: str = "vicreg", score_holdout: bool = False) -> EvalReport:
    """k-fold downstream evaluation of `encoder` on `data` (EvalData) -> EvalReport.

    Hold-out images (data.folds == HOLDOUT, see vicreg.data.make_folds) are left out of
    every fold and scored only with `score_holdout`. With `data.test_images`, each fold's
    model predicts them and the report holds the mean probabilities (for the submission
    file). cfg.protocol picks the protocol (raw pixels, which have no conv stage to fine-tune,
    are scored with a config whose protocol says so: baselines.py).
    """
    protocol = cfg.protocol
    if protocol not in names(Protocol):
        raise ValueError(f"eval.protocol={protocol!r}: expected {', '.join(names(Protocol))}")
    device = torch.device(device)
    images, labels, folds, test_images = data.images, data.labels, data.folds, data.test_images
    cv = folds != HOLDOUT
    n_classes = int(labels.max()) + 1
    frozen = protocol in ("linear", "head")
    hold = np.flatnonzero(~cv)
    results, extra = [], {"test": [], "holdout": []}
    oof = np.zeros((len(labels), n_classes))
    n_train, n_val = [], []
    with tempfile.TemporaryDirectory(prefix="vicreg-features-") as tmp:
        if frozen:  # the features, extracted once for every fold (and once flipped: the frozen protocols' augmentation)
            mean, std = cv_stats(images, folds)
            x = features_on_disk(encoder.to(device), images, mean, std, device, Path(tmp) / "x.npy")
            x_flip = x
            if cfg.augment:  # only the training parts' flips are used: the CV images' (other rows stay 0)
                x_flip = features_on_disk(encoder, images, mean, std, device, Path(tmp) / "flip.npy",
                                          flip=True, rows=np.flatnonzero(cv))
            x_test = (features_on_disk(encoder, test_images, mean, std, device, Path(tmp) / "test.npy")
                      if test_images is not None else None)
        else:
            x, x_flip, x_test = images, images, test_images
        for k in sorted(np.unique(folds[cv]).tolist()):
            res, va, n_tr = _fold(encoder, k, (x, x_flip, x_test), data, cfg, device, score_holdout)
            results.append(res)
            oof[va] = res.probs
            n_train.append(n_tr)
            n_val.append(len(va))
            for name, p in res.predictions.items():
                extra[name].append(p)
    report = EvalReport(label, protocol, results, pooled=scores(labels[cv], oof[cv]),
                        n_train_per_fold=float(np.mean(n_train)), n_val_per_fold=float(np.mean(n_val)))
    if extra.get("test"):
        report.test_probs = np.mean(extra["test"], axis=0)
    if extra.get("holdout"):
        report.holdout_probs, report.holdout_labels = np.mean(extra["holdout"], axis=0), labels[hold]
        report.holdout = scores(labels[hold], report.holdout_probs)
    return report
