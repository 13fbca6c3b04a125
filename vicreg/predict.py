"""The DRAC22 Task 3 submission from an encoder: `predict(encoder, cfg, out) -> EvalReport`.

A head is trained per labelled CV fold (cfg.eval's protocol, the study's folds), each fold's
model predicts the test images, and their mean probabilities are written as
`case,class,P0,P1,P2`. The encoder may come from a `pretrain` checkpoint (`python -m vicreg
predict`) or from the Model Registry (`python sweeps/run.py --predict --model models:/...`,
which fetches it through MLflow: this package never imports mlflow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from .config import Config, ConfigError, DataError
from .data import load_datasets, make_folds
from .evaluate import EvalData, EvalReport, evaluate
from .io import atomic_write
from .synthetic import ensure_synthetic
from .train import resolve_device


def predict(encoder: nn.Module, cfg: Config, out: str | Path, folds_file: str | Path | None = None) -> EvalReport:
    """Train the heads on the CV folds (stored at `folds_file` or data.folds_file, else made with
    the config's k, seed and hold-out), predict the test images, write the CSV `out`."""
    if cfg.data.dataset not in ("drac22", "synthetic"):
        raise ConfigError(f"predict writes a DRAC22 submission; data.dataset is {cfg.data.dataset}")
    ensure_synthetic(cfg.data)
    data = load_datasets(cfg.data)
    if data.test is None:
        raise DataError("no test images found: point --test-root at the DRAC22 testing set")
    folds = make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed,
                       folds_file or cfg.data.folds_file, cfg.data.holdout)
    report = evaluate(encoder, EvalData(data.train.images, data.train.labels, folds, data.test.images), cfg.eval,
                      resolve_device(cfg.train.device))
    write_submission(data.test.names, report.test_probs, out)
    return report


def describe(report: EvalReport, out: str | Path, n_test: int) -> str:
    s = report.summary
    return (f"wrote {out}: {n_test} test images, averaged over {len(report.folds)} fold models "
            f"(cv kappa {s['kappa_mean']:.4f} +- {s['kappa_std']:.4f})")


def write_submission(names: list[str], probs: np.ndarray, path) -> None:
    """DRAC22 Task 3 submission: `case,class,P0,P1,P2`, one row per test image in name order."""
    probs = probs / probs.sum(1, keepdims=True)
    lines = ["case,class,P0,P1,P2"]
    for name, p in zip(names, probs):
        lines.append(f"{name},{int(p.argmax())},{p[0]:.6f},{p[1]:.6f},{p[2]:.6f}")
    atomic_write(path, "\n".join(lines) + "\n")
