"""Several trials per GPU: finished trials per hour, images/s and GPU busy with 1, 2, 4 and 8
workers on one GPU, side by side in one run (`--gpus 0 --per-gpu N`, sweeps/gpu_share.py).

The study is the demo's search at a fixed image size (64 and 224 px), a fixed sampler seed
and no pruning (so every packing runs the same kind of trials), on the synthetic set, with
MLflow off. Each packing runs for `--seconds` (no trial starts after it; those in flight
finish), while NVML (nvidia-ml-py) samples the GPU's utilisation (the share of time a kernel
ran) and memory every 0.5 s. Goal (issue 24): >= 85% GPU busy, and trials per hour at the
best packing >= 3x one worker.

    python benchmarks/gpu_packing.py [--sizes 64 224] [--workers 1 2 4 8] [--seconds 45]
        [--mps] [--json runs/gpu-packing.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def study_file(folder: Path, size: int) -> Path:
    """The demo study at `size` px: its search less the image size, no pruning, no confirm stage."""
    doc = yaml.safe_load((ROOT / "experiments" / "demo.yaml").read_text())
    doc["name"] = f"packing-{size}"
    doc["base"]["data"].update({"image_size": size, "cache_dir": str(folder / "cache"),
                                "root": str(folder / "synthetic")})
    doc["search"].pop("data.image_size", None)
    doc.update({"pruner": {"name": "none"}, "confirm": {"top_k": 0, "seeds": 0}, "system_metrics_interval_s": 0,
                "log_checkpoint": False, "log_plots": False, "checkpoint_every": 1000,
                "sampler": {"name": "tpe", "seed": 0, "n_startup_trials": 4}})
    doc["budget"] = {"trials": 100000, "epochs": doc["budget"]["epochs"]}
    path = folder / f"packing-{size}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class GpuSampler:
    """NVML utilisation and memory of GPU `index`, sampled every `every` seconds in a thread."""

    def __init__(self, index: int = 0, every: float = 0.5) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.handle, self.every = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index), every
        self.util: list[float] = []
        self.mem_gb: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.util.append(float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu))
            self.mem_gb.append(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**30)

    def __enter__(self) -> GpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def finished_trials(out: Path, name: str) -> tuple[list, list]:
    """(finished trials, failed trials) of the run's embedded journal."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "optuna.journal")))
    trials = optuna.load_study(study_name=name, storage=storage).trials
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return done, [t for t in trials if t.state == TrialState.FAIL]


def pretrained_images(trial, per_epoch_images: int) -> int:
    """Images one finished trial pretrained on: epochs x whole batches of the pretraining set."""
    cfg = trial.user_attrs["config"]
    bs = int(cfg["data.batch_size"])
    epochs = int(trial.user_attrs.get("scores", {}).get("pretrain_epochs", cfg["train.epochs"]))
    return epochs * (per_epoch_images // bs) * bs


def summarise(size: int, workers: int, wall: float, done: list, failed: list, per_epoch_images: int,
              util: list[float], mem_gb: list[float]) -> dict:
    """One row of the table."""
    images = sum(pretrained_images(t, per_epoch_images) for t in done)
    return {"px": size, "workers": workers, "wall_s": wall, "finished": len(done),
            "trials_per_hour": len(done) / wall * 3600, "images_per_s": images / wall,
            "gpu_busy_pct": sum(util) / len(util) if util else None,
            "gpu_mem_gb_mean": sum(mem_gb) / len(mem_gb) if mem_gb else None,
            "gpu_mem_gb_max": max(mem_gb) if mem_gb else None, "failures": len(failed),
            "failure_reasons": sorted({t.user_attrs.get("reason", "?") for t in failed})}


def table(rows: list[dict]) -> str:
    """The markdown table, with each packing's trials/h against one worker's at that size."""
    one = {r["px"]: r["trials_per_hour"] for r in rows if r["workers"] == 1}
    lines = ["| px | workers | finished | trials/h | vs 1 worker | img/s (sum) | GPU busy % | GPU mem GB (mean/max) "
             "| failures |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["trials_per_hour"] / one[r["px"]] if one.get(r["px"]) else float("nan")
        busy = f"{r['gpu_busy_pct']:.0f}" if r["gpu_busy_pct"] is not None else "n/a"
        mem = (f"{r['gpu_mem_gb_mean']:.1f}/{r['gpu_mem_gb_max']:.1f}" if r["gpu_mem_gb_mean"] is not None
               else "n/a")
        lines.append(f"| {r['px']} | {r['workers']} | {r['finished']} | {r['trials_per_hour']:.0f} | {ratio:.2f} | "
                     f"{r['images_per_s']:.0f} | {busy} | {mem} | {r['failures']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=45.0, help="wall time per packing (no trial starts after)")
    ap.add_argument("--mps", action="store_true", help="run every packing with CUDA MPS (--mps)")
    ap.add_argument("--json", default="runs/gpu-packing.json")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_packing: no CUDA GPU here; this benchmark measures one (not measured)", file=sys.stderr)
        return 2
    from vicreg.data.synthetic import make_synthetic

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_synthetic(folder / "synthetic", count=120, size=256, seed=0, test_count=0)
        for size in args.sizes:
            study = study_file(folder, size)
            for n in args.workers:
                out = folder / f"runs-{size}-{n}"
                cmd = [sys.executable, str(ROOT / "sweeps" / "run.py"), "--config", str(study), "--gpus", "0",
                       "--per-gpu", str(n), "--no-tracking", "--out", str(out), "--timeout", str(args.seconds),
                       "--set", "train.device=cuda", *(["--mps"] if args.mps else [])]
                with GpuSampler() as gpu:
                    t0 = time.perf_counter()
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    wall = time.perf_counter() - t0
                if proc.returncode not in (0, 1):  # 1: the study did not reach its (huge) budget
                    print(proc.stderr[-3000:], file=sys.stderr)
                done, failed = finished_trials(out, study.stem)
                per_epoch = sum(1 for line in (out / "folds.csv").read_text().splitlines()[2:]
                                if not line.endswith(",-1"))
                rows.append(summarise(size, n, wall, done, failed, per_epoch, gpu.util, gpu.mem_gb))
                print(f"{size} px, {n} worker(s): {len(done)} trials in {wall:.0f} s", flush=True)
    print(f"\n{torch.cuda.get_device_name(0)}; demo search at fixed size, {args.seconds:.0f} s per packing "
          f"(no trial starts after), MPS {'on' if args.mps else 'off'}")
    print(table(rows))
    best = {s: max(r["trials_per_hour"] for r in rows if r["px"] == s) for s in args.sizes}
    for s in args.sizes:
        one = next((r["trials_per_hour"] for r in rows if r["px"] == s and r["workers"] == 1), None)
        busy = max((r["gpu_busy_pct"] or 0) for r in rows if r["px"] == s)
        if one:
            print(f"{s} px: best packing {best[s] / one:.2f}x one worker's trials/h (goal >= 3x); "
                  f"most GPU busy {busy:.0f}% (goal >= 85%)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"seconds": args.seconds, "mps": args.mps, "rows": rows}, indent=1))
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
