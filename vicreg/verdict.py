"""The verdict: did pretraining help against a baseline, by how much, with its 95% interval.

Two verdicts, never mixed up:

**On the hold-out (the headline).** Images that no selection saw, scored by VICReg and by the
baseline under the same seeds (seed s: the same pretraining/encoder seed and head seed on
both sides). The score of a side is the mean over its seeds of one kappa (or accuracy) over
the hold-out images; the verdict is the difference of the two sides. Two things vary: the
images (which ~100 of them the hold-out happened to hold) and the seeds (which encoders and
heads training happened to give). The seeds are crossed with the images (every seed scores
the same images), so the interval comes from a two-way bootstrap (Owen, "The pigeonhole
bootstrap", Ann. Appl. Stat. 2007; the hierarchical bootstrap of Saravanan et al. 2020 for
nested levels): each replicate draws r seeds with replacement and, independently, n images
with replacement, shared by the drawn seeds and by both sides (the pairing is kept). Owen
shows this resampling is conservative for crossed designs (it counts the interaction
twice), which we prefer to the reverse. The interval is BCa (Efron 1987, JASA 82: 171-185):
kappa is a ratio, skewed and biased near its bounds, and on ~100 images percentile intervals
of it are too narrow; BCa corrects the bias (z0, from the share of replicates below the
estimate) and the skew (the acceleration a, from the delete-one-image jackknife: images are
the level with many units; a jackknife over 3 seeds cannot estimate a skewness). Its coverage
is checked by simulation in tests/test_verdict.py.

**On the CV folds (optimistic when they chose the configuration).** The paired fold scores
d[k, s] (fold k, seed s). The folds' training sets overlap, so the corrected resampled t
(Nadeau & Bengio, Machine Learning 52, 2003) is used; the seeds reuse the same folds and each
seed's encoder is scored on every fold, so the k*r cells are not k*r resamples (Bouckaert &
Frank, PAKDD 2004, use J = r*k only when each repetition draws a new partition). We average
the seeds within each fold (J = k, df = k - 1) and add the variance between the seeds' means
(the encoder effect every fold of a seed shares), divided by r:

    d_k = mean_s d[k, s];  m_s = mean_k d[k, s]
    mean(d_k) +- t_{0.975, k-1} * sqrt((1/k + n_test/n_train) * var(d_k) + var(m_s) / r)

(variances with ddof=1; the seed term is 0 for one seed). Repeating the same fold
differences for more seeds therefore narrows nothing, as it must.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

HOLDOUT_WHERE = "on the hold-out"
SELECTION_WHERE = "on the selection folds (optimistic)"
CV_WHERE = "on the CV folds"


@dataclass
class Verdict:
    baseline: str
    diff: float  # VICReg - baseline (mean over seeds)
    lo: float  # 95% interval
    hi: float
    units: int  # hold-out images, or CV folds
    seeds: int = 1
    metric: str = "kappa"
    where: str = HOLDOUT_WHERE

    @property
    def holdout(self) -> bool:
        return self.where == HOLDOUT_WHERE

    @property
    def method(self) -> str:
        return ("two-way bootstrap over seeds and images, BCa (Owen 2007; Efron 1987)" if self.holdout
                else "corrected resampled t, seeds averaged within folds (Nadeau & Bengio 2003)")

    @property
    def conclusion(self) -> str:
        if self.lo > 0:
            return "pretraining helped"
        if self.hi < 0:
            return "pretraining hurt"
        return "not shown to help"

    def line(self) -> str:
        """'pretraining vs random-init on the hold-out: +0.031 kappa (95% CI -0.012..+0.074,
        120 images x 3 seeds): not shown to help'"""
        ci = f"{self.lo:+.3f}..{self.hi:+.3f}" if math.isfinite(self.lo) else "not computable"
        unit = "images" if self.holdout else "folds"
        return (f"pretraining vs {self.baseline} {self.where}: {self.diff:+.3f} {self.metric} "
                f"(95% CI {ci}, {self.units} {unit} x {self.seeds} seed{'s' if self.seeds != 1 else ''})"
                f": {self.conclusion}")

    def as_dict(self) -> dict:
        return {"baseline": self.baseline, "metric": self.metric, "where": self.where, "diff": self.diff,
                "ci95": [self.lo, self.hi], "units": self.units, "seeds": self.seeds,
                "conclusion": self.conclusion, "line": self.line(), "method": self.method}


# --- the CV verdict ---------------------------------------------------------------------


def nested_interval(d: np.ndarray, test_train_ratio: float, level: float = 0.95) -> tuple[float, float]:
    """(lo, hi) around mean(d) for paired differences d (k folds, r seeds): seeds averaged
    within folds, the corrected resampled t over the k fold means, plus var(seed means)/r
    (module docstring). nan for fewer than 2 folds."""
    d = np.asarray(d, dtype=float)
    k, r = d.shape
    if k < 2:
        return float("nan"), float("nan")
    per_fold, per_seed = d.mean(1), d.mean(0)
    var = (1 / k + test_train_ratio) * per_fold.var(ddof=1) + (per_seed.var(ddof=1) / r if r > 1 else 0.0)
    half = stats.t.ppf(0.5 + level / 2, k - 1) * math.sqrt(var)
    return float(d.mean() - half), float(d.mean() + half)


def cv_verdict(vicreg: np.ndarray, baseline: np.ndarray, baseline_name: str, test_train_ratio: float,
               where: str = SELECTION_WHERE, metric: str = "kappa") -> Verdict:
    """Verdict from paired per-fold scores, arrays (k folds, r seeds) on the same folds and
    seeds. `test_train_ratio` is n_test/n_train of one fold: 1/(k-1) for k-fold CV."""
    a, b = np.asarray(vicreg, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or not a.size:
        raise ValueError(f"paired scores must be (folds, seeds) arrays of one shape: {a.shape} vs {b.shape}")
    d = a - b
    lo, hi = nested_interval(d, test_train_ratio)
    return Verdict(baseline_name, float(d.mean()), lo, hi, d.shape[0], d.shape[1], metric, where)


def cv_verdicts(vicreg: list, baselines: dict[str, list], where: str = SELECTION_WHERE,
                metric: str = "kappa") -> list[Verdict]:
    """One CV verdict per baseline from EvalReports: `vicreg[s]` and `baselines[name][s]` are
    seed s's reports on the same folds with the same head seed; `metric` their primary score."""
    ratio = vicreg[0].n_val_per_fold / max(1.0, vicreg[0].n_train_per_fold)
    a = np.array([r.fold_scores(metric) for r in vicreg]).T  # (folds, seeds)
    return [cv_verdict(a, np.array([r.fold_scores(metric) for r in reps]).T, name, ratio, where, metric)
            for name, reps in baselines.items()]


# --- the hold-out verdict ----------------------------------------------------------------


def scores_of(conf: np.ndarray, metric: str) -> np.ndarray:
    """accuracy, macro-F1 (as sklearn's f1_score(average="macro", zero_division=0) over all C
    labels) or quadratic-weighted kappa (as sklearn's cohen_kappa_score), of confusion
    matrices (..., C, C) (rows: labels, columns: predictions) -> (...)."""
    conf = np.asarray(conf, dtype=float)
    n = conf.sum((-2, -1))
    if metric == "accuracy":
        return np.trace(conf, axis1=-2, axis2=-1) / np.maximum(n, 1)
    if metric == "f1":  # per class 2TP / (2TP + FP + FN), 0 where undefined, then the mean
        tp = np.diagonal(conf, axis1=-2, axis2=-1)
        den = conf.sum(-1) + conf.sum(-2)  # = 2TP + FN + FP
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0).mean(-1)
    c = conf.shape[-1]
    i, j = np.indices((c, c))
    w = (i - j) ** 2 / max(1, (c - 1) ** 2)
    expected = conf.sum(-1)[..., :, None] * conf.sum(-2)[..., None, :] / np.maximum(n, 1)[..., None, None]
    den = (w * expected).sum((-2, -1))
    num = (w * conf).sum((-2, -1))
    return np.where(den > 0, 1 - num / np.where(den > 0, den, 1), 0.0)


def _confusions(y: np.ndarray, drawn: np.ndarray, idx: np.ndarray, c: int) -> np.ndarray:
    """Confusion matrices of every (replicate b, drawn seed j): labels y (n,), image draws idx
    (B, n), the drawn seeds' predicted classes on them `drawn` (B, r, n) -> counts (B, r, C, C)."""
    nb, rs, _ = drawn.shape
    cell = (np.arange(nb * rs).reshape(nb, rs, 1) * c + y[idx][:, None, :]) * c + drawn
    return np.bincount(cell.ravel(), minlength=nb * rs * c * c).reshape(nb, rs, c, c)


def _side_scores(y: np.ndarray, pred: np.ndarray, seeds: np.ndarray, idx: np.ndarray, c: int,
                 metric: str) -> np.ndarray:
    """Mean over drawn seeds of the score on drawn images: pred (r, n), seeds (B, r), idx (B, n) -> (B,)."""
    drawn = pred[seeds[:, :, None], idx[:, None, :]]  # (B, r, n)
    return scores_of(_confusions(y, drawn, idx, c), metric).mean(1)


def _jackknife(y: np.ndarray, pred: np.ndarray, c: int, metric: str) -> np.ndarray:
    """Delete-one-image values of the mean-over-seeds score, pred (r, n) -> (n,): each seed's
    full confusion matrix less the one image's cell (O(n) memory, for any hold-out size)."""
    r, n = pred.shape
    full = _confusions(y, pred[None], np.arange(n)[None], c)[0]  # (r, C, C)
    less = np.repeat(full[None], n, 0)  # (n, r, C, C)
    less[np.arange(n)[:, None], np.arange(r)[None, :], y[:, None], pred.T] -= 1
    return scores_of(less, metric).mean(1)


def bca_interval(boots: np.ndarray, estimate: float, jackknife: np.ndarray,
                 level: float = 0.95) -> tuple[float, float]:
    """BCa interval (Efron 1987; Efron & Tibshirani 1993, 14.3) from bootstrap replicates, the
    full-sample estimate and delete-one jackknife values (for the acceleration)."""
    boots = np.asarray(boots, dtype=float)
    if np.ptp(boots) == 0:
        return float(boots[0]), float(boots[0])
    b = len(boots)
    share = (np.sum(boots < estimate) + 0.5 * np.sum(boots == estimate)) / b
    z0 = stats.norm.ppf(np.clip(share, 1 / (2 * b), 1 - 1 / (2 * b)))
    dev = jackknife.mean() - jackknife
    den = 6 * (dev ** 2).sum() ** 1.5
    a = (dev ** 3).sum() / den if den > 0 else 0.0
    z = stats.norm.ppf([(1 - level) / 2, (1 + level) / 2])
    q = stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    lo, hi = np.quantile(boots, q)
    return float(lo), float(hi)


def holdout_verdict(y: np.ndarray, vicreg_probs: list[np.ndarray], baseline_probs: list[np.ndarray],
                    baseline_name: str, metric: str = "kappa", n_boot: int = 2000, seed: int = 0) -> Verdict:
    """The hold-out verdict (module docstring): `y` (N,) labels, `vicreg_probs[s]` and
    `baseline_probs[s]` (N, C) seed s's hold-out probabilities (fold models averaged), the
    same seeds on both sides. Each side's score is the mean over seeds of one score over the
    images; the interval is the two-way (seeds x images) bootstrap, BCa."""
    y = np.asarray(y, dtype=np.int64)
    if len(vicreg_probs) != len(baseline_probs) or not len(vicreg_probs):
        raise ValueError(f"paired seeds must match: {len(vicreg_probs)} vs {len(baseline_probs)}")
    c = vicreg_probs[0].shape[1]
    a = np.stack([np.asarray(p).argmax(1) for p in vicreg_probs])  # (r, n)
    b = np.stack([np.asarray(p).argmax(1) for p in baseline_probs])
    r, n = a.shape
    every_seed, every_image = np.arange(r)[None, :], np.arange(n)[None, :]

    def diff(seeds: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return _side_scores(y, a, seeds, idx, c, metric) - _side_scores(y, b, seeds, idx, c, metric)

    estimate = float(diff(every_seed, every_image)[0])
    rng = np.random.default_rng(seed)
    boots = np.concatenate([diff(rng.integers(0, r, (m, r)), rng.integers(0, n, (m, n)))
                            for m in np.diff(np.r_[0:n_boot:250, n_boot])])  # in chunks: bounded memory
    jack = _jackknife(y, a, c, metric) - _jackknife(y, b, c, metric)
    lo, hi = bca_interval(boots, estimate, jack)
    return Verdict(baseline_name, estimate, lo, hi, n, r, metric, HOLDOUT_WHERE)


def holdout_verdicts(vicreg: list, baselines: dict[str, list], n_boot: int = 2000,
                     metric: str = "kappa") -> list[Verdict]:
    """One hold-out verdict per baseline from EvalReports scored with the hold-out (seed s's
    reports at index s on both sides), on `metric`; [] when there is no hold-out."""
    if not vicreg or vicreg[0].holdout_probs is None or not len(vicreg[0].holdout_probs):
        return []
    y = vicreg[0].holdout_labels
    mine = [r.holdout_probs for r in vicreg]
    return [holdout_verdict(y, mine, [r.holdout_probs for r in reps], name, metric=metric, n_boot=n_boot)
            for name, reps in baselines.items()]
