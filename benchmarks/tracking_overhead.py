"""Time a `demo` trial spends outside pretraining and evaluation (Optuna, MLflow logging,
artifacts and plots, the dataset input, and MLflow's system-metrics monitor at the study's
interval), with tracking on and off, side by side in one run.

    python benchmarks/tracking_overhead.py [--trials 3]

Both runs use the demo study on its synthetic data, in a fresh temporary store, with
pretrain() and the evaluation wrapped by timers; overhead = trial wall time - their time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import optuna

import vicreg.train
from sweeps import run
from sweeps.context import SweepContext
from sweeps.study import StudySpec
from sweeps.tracking import Run

ROOT = Path(__file__).resolve().parents[1]

SPENT = {"work": 0.0, "logging": 0.0}


def timed(fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            SPENT["work"] += time.perf_counter() - t

    return wrapper


def logging_timed(log_epoch):
    """MLflow's per-epoch logging runs inside pretrain (a callback): count it as overhead."""

    def timed_log_epoch(self, report):
        t = time.perf_counter()
        try:
            return log_epoch(self, report)
        finally:
            SPENT["logging"] += time.perf_counter() - t

    return timed_log_epoch


def measure(trials: int, tracking: bool) -> dict[str, float]:
    SPENT["work"] = SPENT["logging"] = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        study_file = Path(tmp) / "demo.yaml"
        # Trials only: the confirm stage is not a trial, and would blur the per-trial figure.
        text = (ROOT / "experiments" / "demo.yaml").read_text()
        study_file.write_text(text.replace("confirm: {top_k: 1, seeds: 3}", "confirm: {top_k: 0, seeds: 0}"))
        args = ["--config", str(study_file), "--trials", str(trials), "--out", f"{tmp}/runs",
                "--set", f"data.root={ROOT / 'data' / 'synthetic-drac22'}",
                "--set", f"data.cache_dir={ROOT / 'data' / '.cache'}"]
        args += ["--tracking-uri", f"sqlite:///{tmp}/mlflow.db"] if tracking else ["--no-tracking"]
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            t0 = time.perf_counter()
            run.main(args)
            total = time.perf_counter() - t0
        finally:
            os.chdir(cwd)
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(f"{tmp}/runs/optuna.journal"))
        done = optuna.load_study(study_name="demo", storage=storage).trials
    trial_s = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done)
    work = SPENT["work"] - SPENT["logging"]
    return {"trials": len(done), "trial_s": trial_s, "work_s": work, "total_s": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()
    vicreg.train.pretrain = timed(vicreg.train.pretrain)  # the objective imports it at its first trial
    SweepContext.score = timed(SweepContext.score)
    Run.log_epoch = logging_timed(Run.log_epoch)
    # Prune nothing, so both runs do the same work.
    StudySpec.make_pruner = lambda self: optuna.pruners.NopPruner()
    rows = {name: measure(args.trials, name == "on") for name in ("off", "on")}
    print("\n| tracking | trials | trial time s | pretrain+eval s | outside s | outside % | whole command s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        out = r["trial_s"] - r["work_s"]
        print(f"| {name} | {r['trials']} | {r['trial_s']:.1f} | {r['work_s']:.1f} | {out:.2f} | "
              f"{100 * out / r['trial_s']:.1f}% | {r['total_s']:.1f} |")


if __name__ == "__main__":
    main()
