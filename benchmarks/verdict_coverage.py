"""How often the verdicts' 95% intervals cover the true difference, by simulation (numbers
only, no training; seeded, so the table is the same every run).

  CV verdict        5 folds x 3 seeds: d[k, s] = mu + fold effect (correlated 1/k, as
                    overlapping training sets make it) + seed effect + noise; the nested
                    interval (seeds averaged within folds) against the old pooling of k*r cells
  hold-out verdict  100 images x r seeds per side, with a seed effect sigma: the two-way
                    (seeds x images) BCa bootstrap against the population difference

The worlds are tests/test_verdict.py's; the tests assert one row each.

    python -m benchmarks.verdict_coverage [--draws 400]     # from the repository root
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from tests.test_verdict import _holdout_world, _population_kappa
from vicreg.verdict import holdout_verdict, nested_interval


def cv_coverage(draws: int) -> tuple[float, float]:
    rng = np.random.default_rng(4)
    k, r, mu = 5, 3, 0.03
    rho = 1 / k
    fold = np.sqrt(rho) * rng.normal(size=(draws, 1)) + np.sqrt(1 - rho) * rng.normal(size=(draws, k))
    d = mu + 0.04 * fold[:, :, None] + 0.03 * rng.normal(size=(draws, 1, r)) + 0.01 * rng.normal(size=(draws, k, r))
    nested = np.mean([lo <= mu <= hi for lo, hi in (nested_interval(x, 1 / (k - 1)) for x in d)])
    flat = d.reshape(draws, -1)
    half = stats.t.ppf(0.975, k * r - 1) * np.sqrt((1 / (k * r) + 1 / (k - 1)) * flat.var(1, ddof=1))
    return float(nested), float(np.mean(np.abs(flat.mean(1) - mu) <= half))


def holdout_coverage(sigma: float, seeds: int, draws: int, alpha: float = 0.6) -> float:
    luck = np.random.default_rng(5).normal(0, sigma, 4000)
    truth = (np.mean([_population_kappa(alpha + 0.4 + e) for e in luck])
             - np.mean([_population_kappa(alpha + e) for e in luck]))
    rng = np.random.default_rng(11)
    hits = 0
    for i in range(draws):
        y, a, b = _holdout_world(rng, 100, seeds, alpha, sigma)
        v = holdout_verdict(y, a, b, "x", n_boot=1000, seed=i)
        hits += v.lo <= truth <= v.hi
    return hits / draws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=400)
    args = ap.parse_args()
    nested, pooled = cv_coverage(max(args.draws, 2000))
    print(f"CV verdict, 5 folds x 3 seeds, {max(args.draws, 2000)} draws: nested {nested:.3f}, "
          f"old pooling of the 15 cells {pooled:.3f}")
    print(f"\nhold-out verdict, 100 images, {args.draws} draws each (nominal 0.95):")
    print("| seed effect sigma | seeds | coverage |\n|---:|---:|---:|")
    for sigma, seeds in ((0.0, 3), (0.15, 3), (0.3, 3), (0.3, 5)):
        print(f"| {sigma} | {seeds} | {holdout_coverage(sigma, seeds, args.draws):.3f} |", flush=True)


if __name__ == "__main__":
    main()
