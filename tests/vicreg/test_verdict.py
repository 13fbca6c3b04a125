"""The verdicts, checked for validity rather than arithmetic: scores and the interval against
independent references (scikit-learn, scipy's t interval, a loop of sklearn kappas), the
words and the primary verdict that follow the data, and coverage and power by simulation in
the worst cells of benchmarks/verdict_coverage.py's grid, on fresh random seeds."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import optimize, stats
from sklearn.metrics import cohen_kappa_score

from vicreg.coverage import ORDINAL, UNIFORM, coverage
from vicreg.evaluate import EvalReport, FoldResult
from vicreg.verdict import (
    CV_WHERE,
    HELPED,
    HOLDOUT_WHERE,
    HURT,
    INCONCLUSIVE,
    MARGIN,
    SAME,
    Verdict,
    cv_verdict,
    cv_verdicts,
    holdout_score,
    holdout_verdict,
    holdout_verdicts,
    more_seeds,
    nested_interval,
    primary,
    scores_of,
    two_part,
)


def test_scores_match_sklearn_on_a_batch_of_confusion_matrices() -> None:
    rng = np.random.default_rng(0)
    for c in (3, 5):
        y, pred = rng.integers(0, c, (4, 200)), rng.integers(0, c, (4, 200))
        pred[:2] = np.where(rng.random((2, 200)) < 0.6, y[:2], pred[:2])  # two better than chance
        conf = np.zeros((4, c, c))
        for b in range(4):
            np.add.at(conf[b], (y[b], pred[b]), 1)
        want = [cohen_kappa_score(y[b], pred[b], weights="quadratic") for b in range(4)]
        np.testing.assert_allclose(scores_of(conf, "kappa"), want, atol=1e-12)
        np.testing.assert_allclose(scores_of(conf, "accuracy"), (y == pred).mean(1), atol=1e-12)


def _onehot(pred: np.ndarray, c: int = 3) -> list[np.ndarray]:
    return [np.eye(c)[p] for p in np.atleast_2d(pred)]


def test_one_seed_accuracy_is_scipys_t_interval() -> None:
    """One seed, accuracy: D is the mean over images of (A right - B right); the jackknife
    variance of a mean is s^2/n, so the interval is the one-sample t interval."""
    rng = np.random.default_rng(2)
    n = 150
    y = rng.integers(0, 3, n)
    pa = np.where(rng.random(n) < 0.7, y, (y + 1) % 3)
    pb = np.where(rng.random(n) < 0.55, y, (y + 2) % 3)
    v = holdout_verdict(y, _onehot(pa), _onehot(pb), "random-init", metric="accuracy")
    d = (pa == y).astype(float) - (pb == y)
    ref = stats.ttest_1samp(d, 0).confidence_interval(0.95)
    assert v.diff == pytest.approx(d.mean())
    assert (v.lo, v.hi) == pytest.approx((ref.low, ref.high), abs=1e-9)


def test_image_part_is_the_jackknife_of_sklearn_kappas_and_the_seed_part_their_spread() -> None:
    """Kappa, 3 seeds: the image part against delete-one-image kappas from scikit-learn, the
    seed part against the per-seed differences, combined as Banerjee's interval."""
    rng = np.random.default_rng(3)
    n, r = 60, 3
    y = rng.integers(0, 3, n)
    a = np.where(rng.random((r, n)) < 0.7, y, rng.integers(0, 3, (r, n)))
    b = np.where(rng.random((r, n)) < 0.5, y, rng.integers(0, 3, (r, n)))

    def kappa(p: np.ndarray, keep: np.ndarray) -> float:
        return cohen_kappa_score(y[keep], p[keep], weights="quadratic")

    every = np.ones(n, bool)
    per_seed = np.array([kappa(a[s], every) - kappa(b[s], every) for s in range(r)])
    jack = []
    for i in range(n):
        keep = every.copy()
        keep[i] = False
        jack.append(np.mean([kappa(a[s], keep) - kappa(b[s], keep) for s in range(r)]))
    jack = np.array(jack)
    v_img = (n - 1) / n * ((jack - jack.mean()) ** 2).sum()
    v_seed = per_seed.var(ddof=1) / r
    half = math.sqrt(stats.t.ppf(0.975, n - 1) ** 2 * v_img + stats.t.ppf(0.975, r - 1) ** 2 * v_seed)
    v = holdout_verdict(y, _onehot(a), _onehot(b), "random-init")
    assert v.diff == pytest.approx(per_seed.mean(), abs=1e-12)
    assert np.ravel(v.parts) == pytest.approx([v_img, n - 1, v_seed, r - 1])
    assert (v.lo, v.hi) == pytest.approx((per_seed.mean() - half, per_seed.mean() + half))


def test_seeds_repeating_the_folds_narrow_nothing() -> None:
    """Five fold differences for one seed, and the same five for three seeds that do not
    differ: the same CV interval (the seed part is 0). The numbers: the corrected resampled t
    with k - 1 = 4 df, by hand."""
    d = np.array([0.10, 0.06, 0.01, 0.08, 0.04])
    one = cv_verdict(0.5 + d[:, None], np.full((5, 1), 0.5), "random-init", 1 / 4)
    three = cv_verdict(0.5 + np.repeat(d[:, None], 3, 1), np.full((5, 3), 0.5), "random-init", 1 / 4)
    assert (three.lo, three.hi) == pytest.approx((one.lo, one.hi))
    half = stats.t.ppf(0.975, 4) * math.sqrt((1 / 5 + 1 / 4) * d.var(ddof=1))
    assert (one.lo, one.hi) == pytest.approx((d.mean() - half, d.mean() + half))


def test_cv_lines_carry_no_words() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.05, (5, 3))
    v = cv_verdict(base + 0.15 + rng.normal(0, 0.02, (5, 3)), base, "raw-pixels", 1 / 4, CV_WHERE)
    assert v.lo > 0 and v.conclusion == "" and "helped" not in v.line()
    assert v.line().startswith(f"pretraining vs raw-pixels {CV_WHERE}: ") and v.line().endswith(
        "5 folds x 3 seeds), not a verdict")
    lo, hi = nested_interval(np.array([[0.2, 0.3]]), 0.25)  # one fold: no interval
    assert np.isnan(lo) and np.isnan(hi)


def _verdict(diff: float, half: float, seeds: int = 5, name: str = "random-init", n: int = 400) -> Verdict:
    """A hold-out verdict whose 95% interval is diff +- half, all of it in the image part."""
    v_img = (half / stats.t.ppf(0.975, n - 1)) ** 2
    return Verdict(name, diff, diff - half, diff + half, n, seeds, "kappa", HOLDOUT_WHERE, ((v_img, n - 1.0),))


@pytest.mark.parametrize("diff, half, outcome", [(0.10, 0.05, HELPED), (-0.10, 0.05, HURT),
                                                 (0.01, 0.04, SAME), (0.03, 0.20, INCONCLUSIVE),
                                                 (-0.03, 0.20, INCONCLUSIVE)])
def test_four_outcomes_follow_the_interval(diff: float, half: float, outcome: str) -> None:
    v = _verdict(diff, half)
    assert v.outcome == outcome
    lo90, hi90 = v.part().interval(0.90)
    assert (outcome == SAME) == (-MARGIN < lo90 and hi90 < MARGIN)
    if outcome == INCONCLUSIVE:  # with the detectable effect: 95% half-width + the 80% one-sided half-width
        want = half + stats.t.ppf(0.8, 399) * half / stats.t.ppf(0.975, 399)
        assert v.detectable == pytest.approx(want) and f"(detectable: {want:.3f} at 80% power)" in v.line()


def test_one_seed_speaks_of_the_checkpoint_and_diverged_seeds_are_named() -> None:
    one = _verdict(0.10, 0.05, seeds=1)
    assert one.conclusion.startswith("this checkpoint did better (one seed: about this checkpoint, not pretraining")
    assert "pretraining helped" not in one.line()
    p = primary([one])
    assert p["line"].startswith("verdict: this checkpoint did better than every baseline") and "3+ seeds" in p["line"]
    y = np.zeros(30, int)
    v = holdout_verdict(y, _onehot(np.zeros((2, 30), int)), _onehot(np.ones((2, 30), int)), "x", diverged=1)
    assert "x 2 of 3 seeds; 1 diverged)" in v.line()


def test_primary_verdict_needs_every_baseline_to_say_helped() -> None:
    strong, weak = _verdict(0.20, 0.05, name="raw-pixels"), _verdict(0.03, 0.10, name="random-init")
    p = primary([strong, weak])
    assert p["outcome"] == INCONCLUSIVE and p["against"] == "random-init"
    assert p["line"].startswith("verdict: pretraining is inconclusive: vs random-init +0.030 kappa")
    assert f"detect {weak.detectable:.3f} at 80% power" in p["line"]
    p = primary([strong, _verdict(0.08, 0.05)])
    assert p["outcome"] == HELPED and p["against"] == "random-init"  # the weakest margin is shown
    # Hurt against one baseline at the Bonferroni level 1 - 0.05/2: -0.06 +- 0.05 at 95% is
    # -0.06 +- 0.057 at 97.5%, still below 0; -0.055 +- 0.05 is not.
    assert primary([strong, _verdict(-0.06, 0.05)])["outcome"] == HURT
    assert primary([strong, _verdict(-0.055, 0.05)])["outcome"] == INCONCLUSIVE
    assert primary([_verdict(0.01, 0.03), _verdict(-0.01, 0.03, name="raw-pixels")])["outcome"] == SAME
    assert primary([cv_verdict(np.ones((5, 2)), np.zeros((5, 2)), "x", 0.25)]) is None  # CV decides nothing


def test_more_seeds_says_whether_they_could_settle_it() -> None:
    """An inconclusive verdict whose width is mostly seeds: 10 seeds could settle +0.08; one
    whose width is images: no number of seeds can."""
    seedy = Verdict("random-init", 0.08, -0.05, 0.21, 400, 3, "kappa", HOLDOUT_WHERE,
                    ((0.0004, 399.0), (0.0008, 2.0)))
    seedy = dataclasses.replace(seedy, lo=seedy.part().interval()[0], hi=seedy.part().interval()[1])
    assert seedy.outcome == INCONCLUSIVE
    assert "more seeds could settle the current estimate +0.080" in more_seeds(seedy, 10)
    imagey = dataclasses.replace(seedy, diff=0.03, parts=((0.004, 399.0), (0.0001, 2.0)))
    imagey = dataclasses.replace(imagey, lo=imagey.part().interval()[0], hi=imagey.part().interval()[1])
    assert "more seeds would not settle" in more_seeds(imagey, 10)
    assert more_seeds(_verdict(0.10, 0.05), 10) == ""  # decided: nothing to add


def _report(label: str, kappas: list[float], holdout_probs: np.ndarray | None = None,
            y: np.ndarray | None = None) -> EvalReport:
    folds = [FoldResult(i, {"kappa": k, "accuracy": 0.5, "auc": 0.5, "recall": [0.5] * 3,
                            "confusion": np.zeros((3, 3))}) for i, k in enumerate(kappas)]
    return EvalReport(label, "linear", folds, holdout_probs=holdout_probs, holdout_labels=y,
                      n_train_per_fold=80, n_val_per_fold=20)


def test_reports_pair_by_seed_and_fold_and_the_quote_has_its_interval() -> None:
    vic = [_report("vicreg", [0.5, 0.6, 0.55]), _report("vicreg", [0.7, 0.8, 0.6])]
    base = {"random-init": [_report("random-init", [0.4, 0.4, 0.5]), _report("random-init", [0.5, 0.9, 0.4])]}
    (v,) = cv_verdicts(vic, base)
    ref = cv_verdict(np.array([[0.5, 0.7], [0.6, 0.8], [0.55, 0.6]]),
                     np.array([[0.4, 0.5], [0.4, 0.9], [0.5, 0.4]]), "random-init", 20 / 80)
    assert (v.diff, v.lo, v.hi, v.units, v.seeds) == pytest.approx((ref.diff, ref.lo, ref.hi, 3, 2))
    with pytest.raises(ValueError, match="paired scores must be"):
        cv_verdict(np.zeros((3, 2)), np.zeros((3, 1)), "x", 0.25)
    assert holdout_verdicts(vic, base) == [] and holdout_score(vic) is None  # no hold-out scored
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 80)
    right = rng.random(80) < 0.75
    probs = np.eye(3)[np.where(right, y, (y + 1) % 3)]
    q = holdout_score([_report("vicreg", [0.5], probs, y)], metric="accuracy")
    ref = stats.ttest_1samp(right.astype(float), 0).confidence_interval(0.95)
    assert q["value"] == pytest.approx(right.mean()) and q["ci95"] == pytest.approx([ref.low, ref.high])
    assert q["text"] == (f"hold-out accuracy {right.mean():.3f} (95% CI {ref.low:.3f}..{ref.high:.3f}, "
                         f"80 images x 1 seed)")


# --- coverage and power by simulation ------------------------------------------------------

WORST = [(ORDINAL, 400, 3, 0.115), (ORDINAL, 1000, 3, 0.06), (UNIFORM, 1000, 3, 0.115)]


# The 1,000-image cells take 4 s each: make test runs them, make test-fast the 400-image one.
@pytest.mark.parametrize("world, n, r, sd", [
    pytest.param(w, n, r, sd, id=f"{w.name}-{n}x{r}-sd{sd}", marks=[pytest.mark.slow] if n >= 1000 else [])
    for w, n, r, sd in WORST])
def test_holdout_interval_covers_in_the_worst_cells(world, n: int, r: int, sd: float) -> None:
    """The cells where the retired two-way bootstrap covered 0.75-0.83 and a single t with
    Satterthwaite's df 0.92-0.93 (benchmarks/verdict_coverage.py). 1500 draws on a fresh seed:
    the two-part interval measured 0.955-0.97 there with each side near 0.02, so 0.93 and 0.035
    sit 4 or more standard errors away; both retired intervals fail these bounds."""
    seed = int(np.random.SeedSequence().entropy % 2 ** 31)
    c = coverage(world, n, r, sd, 1500, np.random.default_rng(seed))
    assert c["coverage"] >= 0.93 and c["above"] <= 0.035 and c["below"] <= 0.035, (seed, c)


def test_the_detectable_effect_is_found_at_least_80_percent_of_the_time() -> None:
    """At a true difference equal to the printed detectable effect (400 images x 5 seeds,
    per-seed SD 0.06), the verdict says helped in about 0.8 of 400 draws. Measured over 40
    generator seeds (100-139), 2026-12-05: mean 0.798, SD 0.039, range 0.715-0.878; the spread
    comes mostly from the effect's estimate (median of 60 draws; correlation 0.88). A fresh seed
    each run failed the 0.75 bound in 5 of those 40, so the seed is fixed: the test stays a
    deterministic check that the printed effect is detected about 80% of the time."""
    rng = np.random.default_rng(0)  # 0.8625 at seed 0
    sigma = ORDINAL.sigma_for(0.06)
    effect = np.median([two_part(y, a, 3, "kappa", b).detectable()
                        for y, a, b in (ORDINAL.draw(rng, 400, 5, sigma) for _ in range(60))])
    lift = optimize.brentq(lambda e: dataclasses.replace(ORDINAL, effect=e).truth(sigma) - effect, 0, 3)
    world = dataclasses.replace(ORDINAL, effect=lift)
    helped = np.mean([two_part(y, a, 3, "kappa", b).interval()[0] > 0
                      for y, a, b in (world.draw(rng, 400, 5, sigma) for _ in range(400))])
    assert 0.75 <= helped <= 0.97, (effect, helped)


def test_one_seed_does_not_cover_the_recipe_once_seeds_matter() -> None:
    """Why a one-seed line speaks of the checkpoint: as an interval for the recipe it covers
    far less than 0.95 when seeds matter (0.29 at 400 images, per-seed SD 0.115)."""
    c = coverage(ORDINAL, 400, 1, 0.115, 300, np.random.default_rng(int(np.random.SeedSequence().entropy % 2 ** 31)))
    assert c["coverage"] < 0.6, c
