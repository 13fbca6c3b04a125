"""Trials per minute of tiny trials with 1, 2 and 4 workers, on the embedded journal storage
and on PostgreSQL, side by side in one run: what the storage costs, and how far workers scale.

    python benchmarks/storage_scaling.py [--trials 100] [--workers 1 2 4] [--tracking]

Each configuration is one `sweeps/run.py --dry-run` sweep (the whole machinery, no training:
sampling, three reported epochs with pruning checks, the claim lock, tell, best-config file)
of the demo study's search space with the random sampler, in a fresh study. PostgreSQL is a
throwaway server on loopback (devtools/postgres.py; needs Debian's `postgresql`). MLflow is off unless
--tracking (then a fresh SQLite store per configuration). Trials/min is measured from the
first trial's start to the last one's end, so process start-up is not counted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import yaml

ROOT = Path(__file__).resolve().parents[1]


def study_file(folder: Path, trials: int) -> Path:
    doc = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())
    doc.update(name="bench", sampler={"name": "random", "seed": 0}, pruner={"name": "none"},
               budget={"trials": trials, "epochs": 3})
    doc["base"]["data"]["root"] = str(folder / "data")  # the synthetic set is made once, here
    doc["base"]["data"]["cache_dir"] = str(folder / "cache")
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def one(study: Path, folder: Path, storage: str | None, workers: int, tracking: bool) -> dict:
    out = folder / "runs"
    cmd = [sys.executable, str(ROOT / "sweeps" / "run.py"), "--config", str(study), "--dry-run",
           "--workers", str(workers), "--out", str(out)]
    cmd += ["--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"] if tracking else ["--no-tracking"]
    cmd += ["--storage", storage] if storage else []
    run = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"sweep failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    st = storage or optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(out / "optuna.journal")))
    trials = optuna.load_study(study_name="bench-dryrun", storage=st).trials
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    rows = [json.loads(line) for line in (out / "timings.jsonl").read_text().splitlines()]

    def ms(key: str) -> float:
        return 1000 * sum(r[key] for r in rows) / len(rows)

    return {"trials": len(trials), "per_min": 60 * len(trials) / span, "storage_ms": ms("storage"),
            "lock_ms": ms("lock_wait"), "mlflow_ms": ms("mlflow"), "total_ms": ms("total")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--tracking", action="store_true", help="MLflow on (a SQLite store per configuration)")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sys.path.insert(0, str(ROOT))  # devtools/postgres.py: the throwaway server the tests start (not installed)
    from devtools.postgres import start_postgres

    pg = start_postgres()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            study = study_file(base, args.trials)
            for name in ("journal", "postgresql"):
                for n in args.workers:
                    folder = base / f"{name}-{n}"
                    folder.mkdir()
                    url = pg.createdb(f"bench_{n}") if name == "postgresql" else None
                    r = one(study, folder, url, n, args.tracking)
                    results.append((name, n, r))
                    print(f"{name} x{n}: {r['per_min']:.0f} trials/min", flush=True)
    finally:
        pg.remove()
    mlflow = "MLflow (SQLite) on" if args.tracking else "MLflow off"
    print(f"\n{args.trials} dry-run trials per row, {mlflow}; per-trial means from runs/<study>/timings.jsonl")
    print("| storage | workers | trials/min | vs 1 worker | storage+sampler ms/trial | claim-lock wait ms/trial "
          "| MLflow ms/trial | wall ms/trial (one worker's view) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, r in results:
        first = next(x for s, m, x in results if s == name and m == args.workers[0])
        print(f"| {name} | {n} | {r['per_min']:.0f} | {r['per_min'] / first['per_min']:.2f} | "
              f"{r['storage_ms']:.0f} | {r['lock_ms']:.0f} | {r['mlflow_ms']:.0f} | {r['total_ms']:.0f} |")


if __name__ == "__main__":
    main()
