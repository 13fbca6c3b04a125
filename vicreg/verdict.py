"""The verdict: did pretraining help against a baseline, and by how much, with its interval.

The unit is a paired difference, VICReg minus baseline, of one score (kappa) on the same
validation fold with the same head seed; with several pretraining seeds, pairs run over
folds x seeds. The folds' training sets overlap, so a plain t interval over the pairs is
overconfident. We use the corrected resampled t (Nadeau & Bengio, Machine Learning 52, 2003):
for J paired differences d_j of train/test splits with n_test/n_train test-to-train size,

    mean(d) +- t_{0.975, J-1} * sqrt((1/J + n_test/n_train) * var(d, ddof=1))

It is computed per verdict, so a reader can redo it from the per-fold scores we store.

On the hold-out (one split, scored once per seed) the interval is a paired bootstrap over
its images instead (Efron & Tibshirani 1993, ch. 13): resample the images with replacement,
score both sides on the same resample (each averaged over its seeds), take the difference;
the 2.5th and 97.5th percentiles of that difference are the interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass
class Verdict:
    baseline: str
    diff: float  # mean paired difference (VICReg - baseline)
    lo: float  # 95% interval
    hi: float
    pairs: int  # J: folds x seeds (or hold-out images)
    metric: str = "kappa"
    unit: str = "paired folds x seeds"

    @property
    def conclusion(self) -> str:
        if self.lo > 0:
            return "pretraining helped"
        if self.hi < 0:
            return "pretraining hurt"
        return "not shown to help"

    def line(self) -> str:
        """'pretraining vs random-init: +0.031 kappa (95% CI -0.012..+0.074, 15 pairs): not shown to help'"""
        ci = f"{self.lo:+.3f}..{self.hi:+.3f}" if math.isfinite(self.lo) else "not computable"
        return (f"pretraining vs {self.baseline}: {self.diff:+.3f} {self.metric} "
                f"(95% CI {ci}, {self.pairs} {self.unit}): {self.conclusion}")

    def as_dict(self) -> dict:
        return {"baseline": self.baseline, "metric": self.metric, "diff": self.diff, "ci95": [self.lo, self.hi],
                "pairs": self.pairs, "conclusion": self.conclusion, "line": self.line(),
                "method": ("paired bootstrap (Efron & Tibshirani 1993)" if "bootstrap" in self.unit
                           else "corrected resampled t (Nadeau & Bengio 2003)")}


def corrected_interval(diffs: np.ndarray, test_train_ratio: float, level: float = 0.95) -> tuple[float, float]:
    """(lo, hi) of the corrected resampled t interval around mean(diffs); nan for J < 2."""
    d = np.asarray(diffs, dtype=float)
    j = len(d)
    if j < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, j - 1) * math.sqrt((1 / j + test_train_ratio) * d.var(ddof=1))
    return float(d.mean() - half), float(d.mean() + half)


def paired_verdict(vicreg: list[float], baseline: list[float], baseline_name: str, test_train_ratio: float,
                   metric: str = "kappa") -> Verdict:
    """Verdict from paired per-split scores (same order: fold-major or seed-major, but the same).

    `test_train_ratio` is n_test/n_train of one split: 1/(k-1) for k-fold CV."""
    a, b = np.asarray(vicreg, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or not len(a):
        raise ValueError(f"paired scores must match: {a.shape} vs {b.shape}")
    d = a - b
    lo, hi = corrected_interval(d, test_train_ratio)
    return Verdict(baseline_name, float(d.mean()), lo, hi, len(d), metric)


def _metric(name: str, y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """accuracy, or quadratic-weighted kappa (as vicreg.evaluate.scores), from a confusion matrix."""
    conf = np.zeros((n_classes, n_classes))
    np.add.at(conf, (y, pred), 1)
    n = conf.sum()
    if name == "accuracy":
        return float(np.trace(conf) / n)
    i, j = np.indices(conf.shape)
    w = (i - j) ** 2 / max(1, (n_classes - 1) ** 2)
    expected = np.outer(conf.sum(1), conf.sum(0)) / n
    denom = (w * expected).sum()
    return float(1 - (w * conf).sum() / denom) if denom > 0 else 0.0


def holdout_verdict(y: np.ndarray, vicreg_probs: list[np.ndarray], baseline_probs: list[np.ndarray],
                    baseline_name: str, metric: str = "kappa", n_boot: int = 2000, seed: int = 0) -> Verdict:
    """Paired bootstrap verdict on the hold-out: `y` (N,) labels, `*_probs[s]` (N, C) seed s's
    averaged fold-model probabilities. Each side's score is the mean over its seeds."""
    y = np.asarray(y)
    n_classes = vicreg_probs[0].shape[1]
    a = [p.argmax(1) for p in vicreg_probs]
    b = [p.argmax(1) for p in baseline_probs]

    def diff(idx: np.ndarray) -> float:
        sa = np.mean([_metric(metric, y[idx], p[idx], n_classes) for p in a])
        sb = np.mean([_metric(metric, y[idx], p[idx], n_classes) for p in b])
        return float(sa - sb)

    rng = np.random.default_rng(seed)
    boots = np.array([diff(rng.integers(0, len(y), len(y))) for _ in range(n_boot)])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Verdict(baseline_name, diff(np.arange(len(y))), float(lo), float(hi), len(y), metric,
                   f"hold-out images x {len(a)} seed(s), paired bootstrap")


def verdicts(vicreg: list, baselines: dict[str, list]) -> list[Verdict]:
    """One verdict per baseline from EvalReports: `vicreg[s]` and `baselines[name][s]` are
    seed s's reports on the same folds with the same head seed; pairs run over seeds x folds."""
    ratio = vicreg[0].n_val_per_fold / max(1.0, vicreg[0].n_train_per_fold)
    a = [k for r in vicreg for k in r.fold_kappas]
    return [paired_verdict(a, [k for r in reps for k in r.fold_kappas], name, ratio)
            for name, reps in baselines.items()]
