"""Predictions for the test images from an encoder: `predict(encoder, cfg, out) -> EvalReport`.

A head is trained per labelled CV fold (cfg.eval's protocol, the study's folds), each fold's
model predicts the test images, and their mean probabilities are written in name order:
DRAC22 Task 3's submission `case,class,P0,P1,P2`, or for a folder/csv set
`image,class,P0,...,Pk` (class: its name; P<i>: the i-th class of data.classes' order).
The encoder may come from a `pretrain` checkpoint (`vicreg predict`) or from the
Model Registry (`vicreg-sweep --predict --model models:/...`, which fetches it
through MLflow: this package never imports mlflow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from ..config import Config, ConfigError, primary_metric
from ..data import load_datasets, make_folds
from ..data.synthetic import ensure_synthetic
from ..errors import DataError
from ..io import atomic_write, csv_text
from ..train import resolve_device
from .protocol import EvalData, evaluate
from .report import EvalReport


def predict(encoder: nn.Module, cfg: Config, out: str | Path, folds_file: str | Path | None = None) -> EvalReport:
    """Train the heads on the CV folds (stored at `folds_file` or data.folds_file, else made with
    the config's k, seed and hold-out), predict the test images, write the CSV `out`."""
    own = cfg.data.dataset in ("folder", "csv")
    if cfg.data.dataset not in ("drac22", "synthetic") and not own:
        raise ConfigError(f"predict scores a set's test images (drac22, synthetic, folder, csv); data.dataset is "
                          f"{cfg.data.dataset}")
    ensure_synthetic(cfg.data)
    data = load_datasets(cfg.data, cfg.model.in_channels)
    if data.test is None:
        raise DataError("no test images: set data.test (a folder) or data.split_column (CSV rows marked test)"
                        if own else "no test images found: point --test-root at the DRAC22 testing set")
    folds = make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed,
                       folds_file or cfg.data.folds_file, cfg.data.holdout)
    metric = primary_metric(cfg.data)
    report = evaluate(encoder, EvalData(data.train.images, data.train.labels, folds, data.test.images, metric),
                      cfg.eval, resolve_device(cfg.train.device))
    if own:
        write_predictions(data.test.names, report.test_probs, data.train.classes, out)
    else:
        write_submission(data.test.names, report.test_probs, out)
    return report


def describe(report: EvalReport, out: str | Path, n_test: int, metric: str = "kappa") -> str:
    s = report.summary
    return (f"wrote {out}: {n_test} test images, averaged over {len(report.folds)} fold models "
            f"(cv {metric} {s[f'{metric}_mean']:.4f} +- {s[f'{metric}_std']:.4f})")


def write_submission(names: list[str], probs: np.ndarray, path) -> None:
    """DRAC22 Task 3 submission: `case,class,P0,P1,P2`, one row per test image in name order."""
    probs = probs / probs.sum(1, keepdims=True)
    rows = [["case", "class", "P0", "P1", "P2"]]
    rows += [[name, int(p.argmax()), *(f"{v:.6f}" for v in p[:3])] for name, p in zip(names, probs)]
    atomic_write(path, csv_text(rows))


def write_predictions(names: list[str], probs: np.ndarray, classes: list[str], path) -> None:
    """A folder/csv set's predictions: `image,class,P0,...,Pk`, one row per test image in name
    order (class: the most probable class's name; P<i>: class i of `classes`)."""
    probs = probs / probs.sum(1, keepdims=True)
    rows = [["image", "class", *(f"P{i}" for i in range(probs.shape[1]))]]
    rows += [[name, classes[int(p.argmax())], *(f"{v:.6f}" for v in p)]
             for name, p in sorted(zip(names, probs), key=lambda item: item[0])]
    atomic_write(path, csv_text(rows))
