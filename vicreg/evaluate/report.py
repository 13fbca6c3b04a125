"""EvalReport: one encoder's scores under one protocol (per CV fold, pooled out-of-fold, hold-out),
as a table, as JSON, and as the one scores file (folds_scores.csv)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from torch import nn

from ..io import csv_text
from .metrics import METRICS, mean_std


@dataclass
class FoldResult:
    fold: int
    metrics: dict  # scores() of the validation images
    curves: list[dict] = field(default_factory=list)  # per epoch: train/val loss, acc, kappa
    best_epoch: int = 0  # the epoch kept: the last one, or the inner split's best
    probs: np.ndarray | None = None  # (N_val, C) validation probabilities (not serialised)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N, C), for predict_sets
    encoder: nn.Module | None = None  # the fold's fine-tuned encoder (fine-tuning protocols; not serialised)


@dataclass
class EvalReport:
    label: str  # "vicreg", "random-init", "raw-pixels", "imagenet"
    protocol: str
    folds: list[FoldResult]
    test_probs: np.ndarray | None = None  # (N_test, C) averaged over the fold models
    pooled: dict | None = None  # scores() of all out-of-fold predictions together
    holdout: dict | None = None  # scores() of the hold-out images (fold models averaged)
    holdout_probs: np.ndarray | None = None  # (N_holdout, C) those averaged probabilities
    holdout_labels: np.ndarray | None = None  # (N_holdout,) their labels, for paired intervals
    n_train_per_fold: float = 0.0  # mean training images per fold (for the verdict's correction)
    n_val_per_fold: float = 0.0

    @property
    def fold_kappas(self) -> list[float]:
        return self.fold_scores("kappa")

    def fold_scores(self, metric: str) -> list[float]:
        """Each fold's validation score; a report stored before f1 existed has none (nan)."""
        return [f.metrics.get(metric, float("nan")) for f in self.folds]

    @property
    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in METRICS:
            out[f"{key}_mean"], out[f"{key}_std"] = mean_std([f.metrics.get(key) for f in self.folds])
        recalls = np.array([f.metrics["recall"] for f in self.folds])
        for c, r in enumerate(recalls.mean(0)):
            out[f"recall_{c}"] = float(r)
        for name, m in (("pooled", self.pooled), ("holdout", self.holdout)):
            if m is not None:
                out |= {f"{key}_{name}": float(m[key]) for key in METRICS if key in m}
        return out

    @property
    def confusion(self) -> np.ndarray:
        return sum(f.metrics["confusion"] for f in self.folds)

    def table(self) -> str:
        def row(name: str, m: dict, suffix: str = "") -> str:
            return f"{name:>18} " + " ".join(f"{m.get(k + suffix, float('nan')):7.4f}" for k in METRICS) + (
                "  " + " ".join(f"{r:.2f}" for r in m["recall"]) if "recall" in m else "")

        lines = [f"{self.label} ({self.protocol})",
                 f"{'':>18} {'kappa':>7} {'f1':>7} {'acc':>7} {'auc':>7}  recall per class"]
        lines += [row(f"CV fold {f.fold}", f.metrics) for f in self.folds]
        s = self.summary
        lines += [row("CV mean", s, "_mean"), row("CV std (ddof=1)", s, "_std")]
        for name, m in (("pooled out-of-fold", self.pooled), ("hold-out", self.holdout)):
            if m is not None:
                lines.append(row(name, m))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready: per-fold and pooled/hold-out scores, and the hold-out probabilities (no curves)."""
        def plain(m: dict | None) -> dict | None:
            return None if m is None else {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in m.items()}

        def listed(a: np.ndarray | None) -> list | None:
            return None if a is None else a.tolist()

        return {"label": self.label, "protocol": self.protocol, "pooled": plain(self.pooled),
                "holdout": plain(self.holdout), "holdout_probs": listed(self.holdout_probs),
                "holdout_labels": listed(self.holdout_labels), "n_train_per_fold": self.n_train_per_fold,
                "n_val_per_fold": self.n_val_per_fold,
                "folds": [{"fold": f.fold, "best_epoch": f.best_epoch, "metrics": plain(f.metrics)}
                          for f in self.folds]}

    @classmethod
    def from_dict(cls, d: dict) -> EvalReport:
        def arrays(m: dict | None) -> dict | None:
            return None if m is None else {**m, "confusion": np.array(m["confusion"])}

        folds = [FoldResult(f["fold"], arrays(f["metrics"]), [], f["best_epoch"]) for f in d["folds"]]
        def array(a: list | None) -> np.ndarray | None:
            return None if a is None else np.asarray(a)

        return cls(d["label"], d["protocol"], folds, None, arrays(d["pooled"]), arrays(d["holdout"]),
                   array(d.get("holdout_probs")), array(d.get("holdout_labels")),
                   d["n_train_per_fold"], d["n_val_per_fold"])


def scores_csv(reports: list[EvalReport]) -> str:
    """folds_scores.csv, the one scores file that `evaluate --out` and every sweep run write:
    `model,split,kappa,f1,accuracy,auc,epoch`, a row per model and CV fold ('fold K', with the
    head's chosen epoch), then its 'pooled' and 'holdout' rows where scored (no epoch)."""
    rows: list[list] = [["model", "split", "kappa", "f1", "accuracy", "auc", "epoch"]]
    for r in reports:
        rows += [[r.label, f"fold {f.fold}", *(f"{f.metrics.get(k, float('nan')):.6f}" for k in METRICS),
                  f.best_epoch] for f in r.folds]
        rows += [[r.label, name, *(f"{m.get(k, float('nan')):.6f}" for k in METRICS), ""]
                 for name, m in (("pooled", r.pooled), ("holdout", r.holdout)) if m is not None]
    return csv_text(rows)
