"""How many trials a sweep spends where training diverges: random search, TPE as the sweeps ran
it before (a diverged trial pruned, nothing more), and TPE with a diverged trial marked
infeasible (Optuna's constraint, sweeps/objective.prune), on a made problem, side by side.

    python benchmarks/divergence.py [--studies 60] [--trials 24]

The made problem has the study templates' shape: optim.name in {adam, sgd, lars}, a log-uniform
lr, and a divergent region (SGD above 0.01, Adam above 0.03: a sixth of the space). A trial that
diverges first reports a good probe (its loss blows up after it), as real ones can. Two pruners:
median (the demo's: 3 start-up trials, warm-up 2) and hyperband (the folder template's: most
trials pruned early, so few complete and TPE's "good" group can fill with pruned trials).
Prints the mean (and SD) of diverged trials per study for each sampler set-up.
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import optuna

STEPS = 4  # probes per trial


def _study(mode: str, pruner: str, seed: int) -> optuna.Study:
    sampler = (optuna.samplers.RandomSampler(seed=seed) if mode == "random"
               else optuna.samplers.TPESampler(seed=seed, n_startup_trials=4))
    p = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2) if pruner == "median"
         else optuna.pruners.HyperbandPruner(min_resource=1, max_resource=STEPS, reduction_factor=3))
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=p)


def wasted(mode: str, pruner: str, seed: int, trials: int) -> int:
    """Diverged trials in one study of `trials`."""
    study, count = _study(mode, pruner, seed), 0
    for _ in range(trials):
        t = study.ask()
        opt = t.suggest_categorical("optim.name", ["adam", "sgd", "lars"])
        lr = t.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
        u = (math.log10(lr) + 4) / 3
        final = {"adam": 0.6, "sgd": 0.55, "lars": 0.65}[opt] - (u - 0.5) ** 2
        if (opt == "sgd" and lr > 0.01) or (opt == "adam" and lr > 0.03):
            count += 1
            t.report(final * 0.75, 1)  # a good first probe, then a non-finite loss
            if mode == "tpe+constraint":
                t.set_constraint("diverged", 1.0)
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
            continue
        state = None
        for step in range(1, STEPS + 1):
            t.report(final * (1 - 0.5 ** step), step)
            if t.should_prune():
                state = optuna.trial.TrialState.PRUNED
                break
        study.tell(t, state=state) if state else study.tell(t, final)
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=60)
    ap.add_argument("--trials", type=int, default=24)
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    print(f"diverged trials per study of {args.trials} (mean +- SD over {args.studies} studies; a sixth of the "
          f"space diverges)")
    print("| pruner | random | TPE, pruned only | TPE, pruned + infeasible |\n|---|---:|---:|---:|")
    for pruner in ("median", "hyperband"):
        cells = []
        for mode in ("random", "tpe", "tpe+constraint"):
            w = np.array([wasted(mode, pruner, s, args.trials) for s in range(args.studies)])
            cells.append(f"{w.mean():.2f} +- {w.std(ddof=1):.2f}")
        print(f"| {pruner} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
