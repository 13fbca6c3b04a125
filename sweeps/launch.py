"""Starting the sweep's worker processes (python -m sweeps.worker) and watching them:
settings as arguments, the storage URL in the environment, one or more per GPU
(sweeps/gpu_share.py), the optional MPS daemon, a progress bar, and SIGTERM passed on."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna

from .gpu_share import start_mps, stop_mps
from .group import free_port, group_env
from .signals import PREEMPT, check_interrupted
from .study import StudySpec
from .worker import STORAGE_ENV, TRACKING_ENV, counts


def run_workers(args: argparse.Namespace, spec: StudySpec, study: optuna.Study, target: int, out_dir: Path,
                gpus: list[str]) -> list[subprocess.Popen]:
    """Start the workers (with MPS when asked), wait for them with a progress bar, and return
    them, ended. `gpus`: one entry per worker (empty: args.workers on the CPU)."""
    n = len(gpus) or args.workers
    mps = start_mps(sorted(set(gpus)), out_dir / "mps") if args.mps else None
    if mps is not None:
        os.environ.update(mps)  # the workers are MPS clients
    try:
        procs = spawn_workers(args, spec, target, out_dir, n, gpus)
        _wait_with_progress(study, procs, target)
    finally:
        if mps is not None:
            stop_mps(mps)
    return procs


def spawn_workers(args: argparse.Namespace, spec: StudySpec, target: int, out_dir: Path, n: int,
                  gpus: list[str]) -> list[subprocess.Popen]:
    """`n` worker processes (python -m sweeps.worker) running this study's trials, one per GPU
    with --gpus. Settings are arguments; the storage and tracking URLs, which may hold a
    password, go in the environment, which `ps` does not show other users."""
    cmd = [sys.executable, "-m", "sweeps.worker", "--config", str(spec.path), "--trials", str(target),
           "--out", str(out_dir), "--workers", str(n)]
    for flag, value in (("--timeout", args.timeout),
                        ("--max-time", args.max_time), ("--data-root", args.data_root),
                        ("--test-root", args.test_root), ("--storage-wait", args.storage_wait)):
        if value is not None:
            cmd += [flag, str(value)]
    for item in args.set:
        cmd += ["--set", item]
    cmd += [flag for flag, on in (("--no-tracking", args.no_tracking), ("--dry-run", args.dry_run)) if on]
    if gpus:
        cmd += ["--per-gpu", str(args.per_gpu)]
    # --gpus-per-trial: each worker is a group of that many processes (sweeps/group.py); a dry run
    # trains nothing, so its workers are rank 0 alone.
    ranks = 1 if args.dry_run else args.gpus_per_trial
    if ranks > 1:
        cmd[cmd.index("--workers") + 1] = str(n * ranks)  # the CPU cores are shared among every process
    procs = []
    for i in range(n):
        env = dict(os.environ)
        for name, value in ((STORAGE_ENV, args.storage), (TRACKING_ENV, args.tracking_uri)):
            env.pop(name, None)
            if value:
                env[name] = value
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]  # gpus: one entry per worker (gpu_share.worker_gpus)
        port = free_port() if ranks > 1 else 0
        for rank in range(ranks):
            group = group_env(rank, ranks, port) if ranks > 1 else {}
            procs.append(subprocess.Popen([*cmd, "--index", str(i)], env=env | group))
    return procs


def _wait_with_progress(study: optuna.Study, procs: list[subprocess.Popen], target: int) -> None:
    from tqdm import tqdm

    bar = tqdm(total=target, desc="trials", dynamic_ncols=True, disable=None)
    forwarded = False
    try:
        while any(p.poll() is None for p in procs):
            if PREEMPT["reason"] and not forwarded:  # SIGTERM to this process only (Kubernetes): pass it on
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                forwarded = True
            bar.n = min(counts(study)["done"], target)
            bar.refresh()
            time.sleep(1.0)
        bar.n = min(counts(study)["done"], target)
        bar.close()
        check_interrupted()
    except KeyboardInterrupt:
        for p in procs:  # they got the SIGINT too; wait for their cleanup
            p.wait()
        raise
