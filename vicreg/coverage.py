"""Simulated hold-outs with a known difference: how often the verdict's interval covers it.

Numbers only, no training: the tests run the worst cells of the grid, and
`benchmarks/verdict_coverage.py` prints the whole grid (hold-outs of 24 to 1000 images, 1 to
10 seeds, four sizes of seed effect, two worlds). Checking an interval this way is the
standard test of its validity: simulate data with a known truth and count how often the 95%
interval holds it, and how often it misses on each side.

A world: n images with grades drawn from `priors`, and r seeds per side. Image i is right for
side X under seed s when

    skill_X + e_Xs - u_i - v_Xi + 0.4 z_Xsi > 0

u_i: how hard the image is (shared by both sides: the pairing); v_Xi: how hard for that
encoder (shared by its seeds); e_Xs ~ N(0, sigma): the seed's luck (the encoder and head that
training drew); z: the seed-image interaction. A wrong image gets an adjacent grade (the
`ordinal` world, as graders and models err on DR grades) or any other grade (the `uniform`
world, the tests' world since the first verdict). P(right | e) = Phi((skill + e) / sqrt(2.16)),
so the population score of a seed, and the truth (the difference of the two sides' population
scores averaged over the seeds' luck), are computed exactly, by Gauss-Hermite quadrature.
Sigma is set from the per-seed SD of the population kappa it causes (0.03, 0.06, 0.115: the
last is the large seed effect seen in the statistics review).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, stats

from .verdict import scores_of, two_part

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(48)  # E[f(e)], e ~ N(0, 1): sum(w f(x)) / sqrt(2 pi)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()
_SPREAD = np.sqrt(1 + 1 + 0.4 ** 2)  # SD of -u - v + 0.4 z


@dataclass(frozen=True)
class World:
    name: str
    priors: tuple[float, ...]
    errors: str  # "adjacent" or "any"
    skill: float  # the baseline's
    effect: float  # VICReg's extra skill

    @property
    def classes(self) -> int:
        return len(self.priors)

    def _wrong(self) -> np.ndarray:
        """P(predicted j | label i, wrong): (C, C)."""
        c = self.classes
        w = np.zeros((c, c))
        for i in range(c):
            others = [j for j in (i - 1, i + 1) if 0 <= j < c] if self.errors == "adjacent" else \
                [j for j in range(c) if j != i]
            w[i, others] = 1 / len(others)
        return w

    def population(self, skill: np.ndarray | float, metric: str = "kappa") -> np.ndarray:
        """The score at infinite n of a side with this skill (any shape)."""
        p = stats.norm.cdf(np.asarray(skill, dtype=float) / _SPREAD)[..., None, None]
        pi = np.asarray(self.priors)[:, None]
        conf = pi * ((1 - p) * self._wrong() + p * np.eye(self.classes))
        return scores_of(conf, metric)

    def seed_sd(self, sigma: float, metric: str = "kappa") -> float:
        """The per-seed SD of the population score at the midpoint skill, for seed luck sigma."""
        vals = self.population(self.skill + self.effect / 2 + sigma * _NODES, metric)
        mean = (_WEIGHTS * vals).sum()
        return float(np.sqrt((_WEIGHTS * (vals - mean) ** 2).sum()))

    @lru_cache(maxsize=64)  # noqa: B019 (a frozen dataclass: the cache holds a few worlds at most)
    def sigma_for(self, kappa_sd: float) -> float:
        """The seed luck sigma whose per-seed kappa SD is `kappa_sd`."""
        if kappa_sd <= 0:
            return 0.0
        return float(optimize.brentq(lambda s: self.seed_sd(s) - kappa_sd, 1e-6, 10.0))

    def truth(self, sigma: float, metric: str = "kappa") -> float:
        """VICReg - baseline in population, averaged over the seeds' luck."""
        e = sigma * _NODES
        return float((_WEIGHTS * (self.population(self.skill + self.effect + e, metric)
                                  - self.population(self.skill + e, metric))).sum())

    def draw(self, rng: np.random.Generator, n: int, r: int, sigma: float) -> tuple[np.ndarray, ...]:
        """One hold-out: labels y (n,) and each side's predicted classes (r, n)."""
        c = self.classes
        y = rng.choice(c, n, p=self.priors)
        u = rng.normal(size=n)
        cum = np.cumsum(self._wrong()[y], 1)  # (n, C): where a wrong image goes

        def side(skill: float) -> np.ndarray:
            v = rng.normal(size=n)
            luck = rng.normal(0, sigma, (r, 1)) if sigma > 0 else np.zeros((r, 1))
            right = skill + luck - u - v + 0.4 * rng.normal(size=(r, n)) > 0
            wrong = (rng.random((r, n, 1)) > cum[None]).sum(-1)
            return np.where(right, y, np.minimum(wrong, c - 1))

        return y, side(self.skill + self.effect), side(self.skill)


# The two worlds of the grid. ORDINAL: DRAC22's grade shares (329/212/70 of 611), adjacent
# errors, baseline kappa 0.60 and VICReg 0.67. UNIFORM: the tests' first world (0.46 and 0.60).
ORDINAL = World("ordinal", (0.54, 0.35, 0.11), "adjacent", 0.45, 0.25)
UNIFORM = World("uniform", (0.5, 0.3, 0.2), "any", 0.6, 0.4)
WORLDS = {w.name: w for w in (ORDINAL, UNIFORM)}


def two_part_interval(y: np.ndarray, a: np.ndarray, b: np.ndarray, c: int, metric: str) -> tuple[float, float]:
    """The product's hold-out interval (vicreg.verdict.two_part) from predicted classes."""
    return two_part(y, a, c, metric, b).interval()


def coverage(world: World, n: int, r: int, kappa_sd: float, draws: int, rng: np.random.Generator,
             method=two_part_interval, metric: str = "kappa") -> dict[str, float]:
    """How often `method`'s 95% interval covers the truth over `draws` simulated hold-outs;
    `above`: the interval lies wholly above the truth (a wrong "helped" when the truth is 0),
    `below`: wholly below. Each should be about 0.025."""
    sigma = world.sigma_for(kappa_sd)
    truth = world.truth(sigma, metric)
    above = below = 0
    for _ in range(draws):
        y, a, b = world.draw(rng, n, r, sigma)
        lo, hi = method(y, a, b, world.classes, metric)
        above += lo > truth
        below += hi < truth
    return {"coverage": 1 - (above + below) / draws, "above": above / draws, "below": below / draws,
            "truth": truth}
