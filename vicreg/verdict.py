"""The verdict: did pretraining help against a baseline, by how much, with its 95% interval.

**On the hold-out (the headline).** Images that no selection saw, scored by VICReg and by the
baseline under the same seeds (seed s: the same pretraining/encoder seed and head seed on
both sides). A side's score is the mean over its r seeds of one score (kappa, macro-F1 or
accuracy) over the n hold-out images; D is the difference of the two sides. Two things vary:
which images the hold-out holds, and which encoders and heads training drew. The seeds are
crossed with the images (every seed scores the same images), and the interval has one part
for each (the two-part interval):

    V_img  = the delete-one-image jackknife variance of D, every seed kept (Efron & Stein,
             Ann. Stat. 9, 1981: in expectation it does not underestimate; no Monte Carlo
             error, so the printed ends are the same on every run), df n - 1
    V_seed = s^2 / r, s^2 the sample variance (ddof=1) of the r per-seed differences d_s
             (the images' main effect cancels in s^2: every seed scores the same images), df r - 1
    D +- sqrt(t_{0.975, n-1}^2 V_img + t_{0.975, r-1}^2 V_seed)

Each part is scaled by its own t quantile (Banerjee, Sankhya A 23, 1961: at least the nominal
coverage for any ratio of the two variances). With no seed part it is the usual t interval,
with no image part the t interval over seeds. The alternatives under-cover with 3 seeds: a
bootstrap over r seeds sees only (r-1)/r of their variance and a normal quantile ignores that
it is estimated from r values (0.80 where it said 0.95 on 400 images x 3 seeds), and one t
with Welch-Satterthwaite degrees of freedom, which are estimated from the same s^2, covered
0.92. `benchmarks/verdict_coverage.py` prints the grid, the old method beside it.

With one seed there is no seed term: the interval speaks of this checkpoint (its images'
noise only), not of the recipe, and the line says so.

**Words, on hold-out lines only.** Four outcomes:
  helped / hurt             the 95% interval is above / below 0
  no meaningful difference  the 90% interval lies within +-MARGIN (two one-sided tests,
                            Schuirmann 1987)
  inconclusive              neither; printed with the smallest effect that this hold-out and
                            these seeds would detect at 80% power: the 95% half-width plus the
                            half-width at one-sided 0.80 (2.8 SE for large df)

**The primary verdict** (`primary`) combines the baselines into one answer. Pretraining
helped only when it is above every baseline (an intersection-union test: no multiplicity
correction is needed, Berger 1982); it hurt when it is below any one of them at the
Bonferroni level 1 - 0.05/m (m baselines); no meaningful difference needs equivalence to every
baseline; anything else is inconclusive.

**On the CV folds (optimistic, no words).** The paired fold scores d[k, s] (fold k, seed s).
The folds' training sets overlap, so the corrected resampled t (Nadeau & Bengio, Machine
Learning 52, 2003); the seeds reuse the same folds and each seed's encoder is scored on every
fold, so the k*r cells are not k*r resamples (Bouckaert & Frank, PAKDD 2004). The seeds are
averaged within each fold and the variance between the seeds' means is added:

    A = (1/k + n_test/n_train) * var(d_k),  df k - 1;   B = var(m_s) / r,  df r - 1
    mean(d) +- sqrt(t_{0.975, k-1}^2 A + t_{0.975, r-1}^2 B)      (Banerjee, as above)

so the seed part brings its own r - 1 degrees of freedom (a t with k - 1 alone covered 0.92
when the seeds dominate).

Pretraining saw the validation folds' images, and after a sweep those folds chose the
configuration, so these lines carry an estimate and an interval, never "helped".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

HOLDOUT_WHERE = "on the hold-out"
SELECTION_WHERE = "on the selection folds (optimistic)"
CV_WHERE = "on the CV folds (optimistic)"
MARGIN = 0.05  # "no meaningful difference": the 90% interval inside +-0.05 (kappa, F1 or accuracy)
POWER = 0.80  # the detectable effect printed beside "inconclusive"

HELPED, HURT, SAME, INCONCLUSIVE = "helped", "hurt", "no meaningful difference", "inconclusive"


@dataclass(frozen=True)
class TwoPart:
    """An estimate with independent variance parts, each with its degrees of freedom:
    ((V_img, n - 1), (V_seed, r - 1)) on the hold-out, ((A, k - 1), (B, r - 1)) on the folds."""
    estimate: float
    parts: tuple[tuple[float, float], ...]

    def half(self, q: float) -> float:
        """Banerjee's half-width at one-sided quantile q: sqrt(sum of t_{q, df_i}^2 V_i)."""
        return math.sqrt(sum(stats.t.ppf(q, df) ** 2 * v for v, df in self.parts if v > 0 and df > 0))

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        h = self.half(0.5 + level / 2)
        return self.estimate - h, self.estimate + h

    def detectable(self, power: float = POWER) -> float:
        """The smallest true difference that a two-sided 5% test finds with `power`."""
        return self.half(0.975) + self.half(power)

    def with_seeds(self, r: int) -> TwoPart:
        """The hold-out's parts with r seeds, if the seeds vary as these did (a projection)."""
        (v_img, df_img), *seed = self.parts
        if not seed:
            return self
        v, df = seed[0]
        return TwoPart(self.estimate, ((v_img, df_img), (v * (df + 1) / r, r - 1)))


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
    parts: tuple[tuple[float, float], ...] = ()  # (variance, df) of each part (TwoPart)
    diverged: int = 0  # seeds that diverged and are not in the verdict

    @property
    def holdout(self) -> bool:
        return self.where == HOLDOUT_WHERE

    @property
    def method(self) -> str:
        return ("two-part interval: image jackknife + seed variance, Banerjee's t (Banerjee 1961)" if self.holdout
                else "corrected resampled t, seeds averaged within folds, Banerjee's t (Nadeau & Bengio 2003)")

    def part(self) -> TwoPart:
        return TwoPart(self.diff, tuple(tuple(p) for p in self.parts))

    @property
    def detectable(self) -> float:
        return self.part().detectable() if self.parts else math.nan

    @property
    def outcome(self) -> str:
        """helped, hurt, no meaningful difference or inconclusive (module docstring)."""
        if self.lo > 0:
            return HELPED
        if self.hi < 0:
            return HURT
        if self.parts:
            lo90, hi90 = self.part().interval(0.90)
            if -MARGIN < lo90 and hi90 < MARGIN:
                return SAME
        return INCONCLUSIVE

    @property
    def conclusion(self) -> str:
        """The words of a hold-out line ('' on the CV folds: no words there)."""
        if not self.holdout:
            return ""
        o = self.outcome
        if self.seeds == 1:  # one checkpoint: its images' noise only, nothing about the recipe
            o = {HELPED: "this checkpoint did better", HURT: "this checkpoint did worse"}.get(o, o)
            return f"{o} (one seed: about this checkpoint, not pretraining; confirm with 3+ seeds for a verdict)"
        if o in (HELPED, HURT):
            return f"pretraining {o}"
        if o == SAME:
            return f"{SAME} (90% CI within +-{MARGIN})"
        return f"inconclusive (detectable: {self.detectable:.3f} at 80% power)"

    def line(self) -> str:
        """'pretraining vs random-init on the hold-out: +0.031 kappa (95% CI -0.012..+0.074,
        120 images x 3 seeds): inconclusive (detectable: 0.121 at 80% power)'"""
        ci = f"{self.lo:+.3f}..{self.hi:+.3f}" if math.isfinite(self.lo) else "not computable"
        unit = "images" if self.holdout else "folds"
        seeds = f"{self.seeds} seed{'s' if self.seeds != 1 else ''}"
        if self.diverged:
            seeds = f"{self.seeds} of {self.seeds + self.diverged} seeds; {self.diverged} diverged"
        words = f": {self.conclusion}" if self.holdout else ", not a verdict"
        return (f"pretraining vs {self.baseline} {self.where}: {self.diff:+.3f} {self.metric} "
                f"(95% CI {ci}, {self.units} {unit} x {seeds}){words}")

    def as_dict(self) -> dict:
        return {"baseline": self.baseline, "metric": self.metric, "where": self.where, "diff": self.diff,
                "ci95": [self.lo, self.hi], "units": self.units, "seeds": self.seeds,
                "parts": [list(p) for p in self.parts], "diverged": self.diverged, "detectable": self.detectable,
                "outcome": self.outcome if self.holdout else "", "conclusion": self.conclusion,
                "line": self.line(), "method": self.method}

    @classmethod
    def from_dict(cls, d: dict) -> Verdict:
        return cls(d["baseline"], d["diff"], *d["ci95"], d["units"], d["seeds"], d["metric"], d["where"],
                   tuple(tuple(p) for p in d.get("parts", ())), d.get("diverged", 0))


def _verdict(part: TwoPart, baseline: str, units: int, seeds: int, metric: str, where: str,
             diverged: int = 0) -> Verdict:
    lo, hi = part.interval()
    return Verdict(baseline, part.estimate, lo, hi, units, seeds, metric, where, part.parts, diverged)


# --- the primary verdict ------------------------------------------------------------------


def primary(verdicts: list[Verdict]) -> dict | None:
    """One answer from the hold-out verdicts against every baseline (module docstring):
    {"outcome", "against" (the deciding baseline), "line"}; None without a hold-out."""
    hold = [v for v in verdicts if v.holdout]
    if not hold:
        return None
    m = len(hold)
    below = [v for v in hold if v.parts and v.part().interval(1 - 0.05 / m)[1] < 0]  # Bonferroni over m
    if all(v.outcome == HELPED for v in hold):
        outcome, deciding = HELPED, min(hold, key=lambda v: v.lo)
    elif below:
        outcome, deciding = HURT, max(below, key=lambda v: v.hi)
    elif all(v.outcome == SAME for v in hold):
        outcome, deciding = SAME, max(hold, key=lambda v: abs(v.diff))
    else:
        outcome, deciding = INCONCLUSIVE, min(hold, key=lambda v: v.diff)  # the closest competitor
    v = deciding
    if v.seeds == 1:
        subject = "this checkpoint"
        words = {HELPED: "did better than every baseline", HURT: f"did worse than {v.baseline}"}.get(outcome, outcome)
        tail = "; one seed speaks of this checkpoint, not of pretraining: confirm with 3+ seeds for a verdict"
    else:
        subject = "pretraining"
        words = {HELPED: "helped (above every baseline)", HURT: f"hurt (below {v.baseline})",
                 SAME: f"made no meaningful difference (within +-{MARGIN} of every baseline)",
                 INCONCLUSIVE: "is inconclusive"}[outcome]
        tail = ""
    detect = (f"; this hold-out and these seeds detect {v.detectable:.3f} at 80% power"
              if outcome == INCONCLUSIVE else "")
    line = (f"verdict: {subject} {words}: vs {v.baseline} {v.diff:+.3f} {v.metric} (95% CI {v.lo:+.3f}..{v.hi:+.3f}, "
            f"{v.units} hold-out images x {v.seeds} seed{'s' if v.seeds != 1 else ''}){detect}{tail}")
    return {"outcome": outcome, "against": v.baseline, "line": line}


def more_seeds(verdict: Verdict, seeds: int) -> str:
    """Whether more seeds could settle an inconclusive hold-out verdict: the detectable effect
    with `seeds` seeds if they vary as these did, and with the images alone (no seed part)."""
    if verdict.outcome != INCONCLUSIVE or verdict.seeds < 2 or not verdict.parts:
        return ""
    part = verdict.part()
    more, images = part.with_seeds(seeds).detectable(), TwoPart(part.estimate, part.parts[:1]).detectable()
    could = "could" if abs(verdict.diff) >= more else "would not"
    return (f"with {seeds} seeds the detectable effect vs {verdict.baseline} would be {more:.3f} "
            f"(the images alone limit it to {images:.3f}): more seeds {could} settle the current "
            f"estimate {verdict.diff:+.3f}")


# --- the CV verdict ---------------------------------------------------------------------


def nested_part(d: np.ndarray, test_train_ratio: float) -> TwoPart:
    """Paired differences d (k folds, r seeds): the fold part with the corrected resampled t's
    factor (df k - 1) and the seed part (df r - 1), module docstring."""
    k, r = d.shape
    parts = [((1 / k + test_train_ratio) * d.mean(1).var(ddof=1), k - 1)]
    if r > 1:
        parts.append((d.mean(0).var(ddof=1) / r, r - 1))
    return TwoPart(float(d.mean()), tuple((float(v), float(df)) for v, df in parts))


def nested_interval(d: np.ndarray, test_train_ratio: float, level: float = 0.95) -> tuple[float, float]:
    """(lo, hi) around mean(d) for paired differences d (k folds, r seeds); nan for fewer than 2 folds."""
    d = np.asarray(d, dtype=float)
    if d.shape[0] < 2:
        return float("nan"), float("nan")
    return nested_part(d, test_train_ratio).interval(level)


def cv_verdict(vicreg: np.ndarray, baseline: np.ndarray, baseline_name: str, test_train_ratio: float,
               where: str = SELECTION_WHERE, metric: str = "kappa") -> Verdict:
    """Paired per-fold scores, arrays (k folds, r seeds) on the same folds and seeds.
    `test_train_ratio` is n_test/n_train of one fold: 1/(k-1) for k-fold CV."""
    a, b = np.asarray(vicreg, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 2 or not a.size:
        raise ValueError(f"paired scores must be (folds, seeds) arrays of one shape: {a.shape} vs {b.shape}")
    d = a - b
    if d.shape[0] < 2:
        return Verdict(baseline_name, float(d.mean()), math.nan, math.nan, d.shape[0], d.shape[1], metric, where)
    return _verdict(nested_part(d, test_train_ratio), baseline_name, d.shape[0], d.shape[1], metric, where)


def cv_verdicts(vicreg: list, baselines: dict[str, list], where: str = SELECTION_WHERE,
                metric: str = "kappa") -> list[Verdict]:
    """One CV line per baseline from EvalReports: `vicreg[s]` and `baselines[name][s]` are
    seed s's reports on the same folds with the same head seed; `metric` their primary score."""
    ratio = vicreg[0].n_val_per_fold / max(1.0, vicreg[0].n_train_per_fold)
    a = np.array([r.fold_scores(metric) for r in vicreg]).T  # (folds, seeds)
    return [cv_verdict(a, np.array([r.fold_scores(metric) for r in reps]).T, name, ratio, where, metric)
            for name, reps in baselines.items()]


# --- the hold-out verdict ----------------------------------------------------------------


def scores_of(conf: np.ndarray, metric: str) -> np.ndarray:
    """accuracy, macro-F1 (as sklearn's f1_score(average="macro", labels=range(C),
    zero_division=0): a class with no label and no prediction in these images counts 0, on
    both sides alike) or quadratic-weighted kappa (as sklearn's cohen_kappa_score), of
    confusion matrices (..., C, C) (rows: labels, columns: predictions) -> (...)."""
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


def _confusions(y: np.ndarray, pred: np.ndarray, c: int) -> np.ndarray:
    """Each seed's confusion matrix: labels y (n,), predicted classes pred (r, n) -> (r, C, C)."""
    r = pred.shape[0]
    cell = (np.arange(r)[:, None] * c + y[None, :]) * c + pred
    return np.bincount(cell.ravel(), minlength=r * c * c).reshape(r, c, c)


def _per_seed_and_jackknife(y: np.ndarray, pred: np.ndarray, c: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Each seed's score (r,) and the delete-one-image values of the mean-over-seeds score
    (n,): each seed's confusion matrix less the one image's cell (O(n r C^2) memory)."""
    r, n = pred.shape
    full = _confusions(y, pred, c)  # (r, C, C)
    less = np.repeat(full[None], n, 0)  # (n, r, C, C)
    less[np.arange(n)[:, None], np.arange(r)[None, :], y[:, None], pred.T] -= 1
    return scores_of(full, metric), scores_of(less, metric).mean(1)


def two_part(y: np.ndarray, pred: np.ndarray, c: int, metric: str, other: np.ndarray | None = None) -> TwoPart:
    """The two-part estimate (module docstring) of the mean-over-seeds score of predicted
    classes pred (r, n) against labels y (n,), or of its difference with `other` (r, n), the
    baseline's predictions under the same seeds on the same images."""
    seeds, jack = _per_seed_and_jackknife(y, pred, c, metric)
    if other is not None:
        s_b, j_b = _per_seed_and_jackknife(y, other, c, metric)
        seeds, jack = seeds - s_b, jack - j_b
    r, n = pred.shape
    parts = [((n - 1) / n * float(((jack - jack.mean()) ** 2).sum()), n - 1)]
    if r > 1:
        parts.append((float(seeds.var(ddof=1)) / r, r - 1))
    return TwoPart(float(seeds.mean()), tuple((v, float(df)) for v, df in parts))


def _classes(probs: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(p).argmax(1) for p in probs])


def holdout_verdict(y: np.ndarray, vicreg_probs: list[np.ndarray], baseline_probs: list[np.ndarray],
                    baseline_name: str, metric: str = "kappa", diverged: int = 0) -> Verdict:
    """The hold-out verdict (module docstring): `y` (N,) labels, `vicreg_probs[s]` and
    `baseline_probs[s]` (N, C) seed s's hold-out probabilities (fold models averaged), the
    same seeds on both sides; `diverged` seeds left out are named on the line."""
    y = np.asarray(y, dtype=np.int64)
    if len(vicreg_probs) != len(baseline_probs) or not len(vicreg_probs):
        raise ValueError(f"paired seeds must match: {len(vicreg_probs)} vs {len(baseline_probs)}")
    c = np.asarray(vicreg_probs[0]).shape[1]
    part = two_part(y, _classes(vicreg_probs), c, metric, _classes(baseline_probs))
    return _verdict(part, baseline_name, len(y), len(vicreg_probs), metric, HOLDOUT_WHERE, diverged)


def holdout_verdicts(vicreg: list, baselines: dict[str, list], metric: str = "kappa",
                     diverged: int = 0) -> list[Verdict]:
    """One hold-out verdict per baseline from EvalReports scored with the hold-out (seed s's
    reports at index s on both sides), on `metric`; [] when there is no hold-out."""
    if not vicreg or vicreg[0].holdout_probs is None or not len(vicreg[0].holdout_probs):
        return []
    y = vicreg[0].holdout_labels
    mine = [r.holdout_probs for r in vicreg]
    return [holdout_verdict(y, mine, [r.holdout_probs for r in reps], name, metric, diverged)
            for name, reps in baselines.items()]


def holdout_score(reports: list, metric: str = "kappa") -> dict | None:
    """The number to quote: the mean-over-seeds hold-out score of these reports (one per seed)
    with its two-part 95% interval, clipped to the score's range; None without a hold-out."""
    if not reports or reports[0].holdout_probs is None or not len(reports[0].holdout_probs):
        return None
    y = np.asarray(reports[0].holdout_labels, dtype=np.int64)
    probs = [r.holdout_probs for r in reports]
    part = two_part(y, _classes(probs), np.asarray(probs[0]).shape[1], metric)
    low = -1.0 if metric == "kappa" else 0.0
    lo, hi = (min(max(x, low), 1.0) for x in part.interval())
    n, r = len(y), len(probs)
    return {"metric": metric, "value": part.estimate, "ci95": [lo, hi], "images": n, "seeds": r,
            "text": f"hold-out {metric} {part.estimate:.3f} (95% CI {lo:.3f}..{hi:.3f}, {n} images x "
                    f"{r} seed{'s' if r != 1 else ''})"}
