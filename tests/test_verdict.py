"""The verdict: the corrected resampled t interval against a hand computation, the wording,
and the pairing of folds x seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vicreg.evaluate import EvalReport, FoldResult
from vicreg.verdict import Verdict, _metric, holdout_verdict, paired_verdict, verdicts

T_975_DF4 = 2.7764451051977987  # Student t, 97.5th percentile, 4 degrees of freedom (tables)


def test_interval_matches_nadeau_bengio_by_hand() -> None:
    a = np.array([0.60, 0.55, 0.48, 0.58, 0.53])
    b = np.array([0.50, 0.50, 0.50, 0.50, 0.50])
    v = paired_verdict(a.tolist(), b.tolist(), "random-init", test_train_ratio=1 / 4)
    d = [0.10, 0.05, -0.02, 0.08, 0.03]
    mean = sum(d) / 5
    var = sum((x - mean) ** 2 for x in d) / 4
    half = T_975_DF4 * math.sqrt((1 / 5 + 1 / 4) * var)
    assert v.diff == pytest.approx(mean)
    assert (v.lo, v.hi) == pytest.approx((mean - half, mean + half))
    assert v.pairs == 5 and v.conclusion == "not shown to help"  # the interval spans 0
    assert v.line() == (f"pretraining vs random-init: +0.048 kappa (95% CI {mean - half:+.3f}..{mean + half:+.3f}, "
                        f"5 paired folds x seeds): not shown to help")


@pytest.mark.parametrize("lo, hi, words", [(0.01, 0.2, "pretraining helped"), (-0.2, -0.01, "pretraining hurt"),
                                            (-0.1, 0.1, "not shown to help"),
                                            (float("nan"), float("nan"), "not shown to help")])
def test_conclusion_only_claims_what_the_interval_shows(lo, hi, words) -> None:
    assert Verdict("raw-pixels", 0.0, lo, hi, 5).conclusion == words


def test_the_correction_widens_the_naive_interval() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.5, 0.05, 15), rng.normal(0.45, 0.05, 15)
    naive = paired_verdict(a.tolist(), b.tolist(), "x", test_train_ratio=0.0)
    corrected = paired_verdict(a.tolist(), b.tolist(), "x", test_train_ratio=1 / 4)
    assert corrected.hi - corrected.lo > 2 * (naive.hi - naive.lo)


def _report(label: str, kappas: list[float]) -> EvalReport:
    folds = [FoldResult(i, {"kappa": k, "accuracy": 0.5, "auc": 0.5, "recall": [0.5] * 3,
                            "confusion": np.zeros((3, 3))}) for i, k in enumerate(kappas)]
    return EvalReport(label, "linear", folds, n_train_per_fold=80, n_val_per_fold=20)


def test_pairs_run_over_seeds_and_folds() -> None:
    vic = [_report("vicreg", [0.5, 0.6]), _report("vicreg", [0.7, 0.8])]
    base = {"random-init": [_report("random-init", [0.4, 0.4]), _report("random-init", [0.5, 0.9])]}
    (v,) = verdicts(vic, base)
    assert v.pairs == 4 and v.diff == pytest.approx(np.mean([0.1, 0.2, 0.2, -0.1]))
    ref = paired_verdict([0.5, 0.6, 0.7, 0.8], [0.4, 0.4, 0.5, 0.9], "random-init", 20 / 80)
    assert (v.lo, v.hi) == pytest.approx((ref.lo, ref.hi))
    with pytest.raises(ValueError, match="paired scores must match"):
        paired_verdict([0.1, 0.2], [0.1], "x", 0.25)


def test_holdout_bootstrap_verdict() -> None:
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    noisy = np.where(rng.random(300) < 0.5, y, rng.integers(0, 4, 300))
    assert _metric("kappa", y, noisy, 4) == pytest.approx(cohen_kappa_score(y, noisy, weights="quadratic"))
    assert _metric("accuracy", y, noisy, 4) == pytest.approx((y == noisy).mean())
    good, bad = np.eye(4)[y] * 0.9 + 0.025, np.eye(4)[noisy] * 0.9 + 0.025
    same = holdout_verdict(y, [bad], [bad], "random-init", n_boot=200)
    assert same.diff == 0 and (same.lo, same.hi) == (0, 0)
    v = holdout_verdict(y, [good, good], [bad, bad], "random-init", metric="accuracy", n_boot=200)
    assert v.diff == pytest.approx(1 - (y == noisy).mean()) and 0 < v.lo < v.diff < v.hi
    assert v.conclusion == "pretraining helped" and "300 hold-out images x 2 seed(s), paired bootstrap" in v.line()
