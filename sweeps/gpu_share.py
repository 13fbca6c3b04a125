"""Several trials on one GPU (`--gpus 0,1 --per-gpu N`): which GPU each worker gets, its share
of the GPU's memory, the lock that gives a trial the whole GPU, and CUDA MPS.

One process per GPU slot, pinned with CUDA_VISIBLE_DEVICES (Optuna's FAQ: threads share one
GIL). Ray Tune's fractional GPUs are bookkeeping only, and packed trials that outgrow the
device run out of memory (ray issues 23971, 44256); here each packed worker caps what its
caching allocator may take with torch.cuda.set_per_process_memory_fraction (over the cap:
torch.OutOfMemoryError in that process only),
so one trial cannot starve the others, and a trial that still runs out of memory is retried
once alone on its GPU (worker.py), so a large image size or batch is not lost because it was
packed. Packed workers hold their GPU's lock shared while a trial runs; an alone trial takes
it exclusively, behind a turnstile (the gate) so that new packed trials cannot starve it,
and lifts the memory cap for its duration. The locks are files in the study's folder, named
by host and GPU.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MEMORY_MARGIN = 0.05  # of the GPU's memory, left to the N CUDA contexts (about 0.5 GB each) and fragmentation
MPS_CONTROL = "nvidia-cuda-mps-control"


def memory_fraction(per_gpu: int) -> float:
    """Each of `per_gpu` workers' cap on one GPU's memory: (1 - margin) / N; 1 alone."""
    return 1.0 if per_gpu <= 1 else (1.0 - MEMORY_MARGIN) / per_gpu


def gpu_list(spec: str) -> list[str]:
    """--gpus "0-3,6" -> ['0', '1', '2', '3', '6']; [] when a range runs backwards ("3-1")."""
    out = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if int(hi or lo) < int(lo):
            return []
        out += [str(g) for g in range(int(lo), int(hi or lo) + 1)]
    return out


def worker_gpus(gpus: list[str], per_gpu: int, per_trial: int = 1) -> list[str]:
    """The GPUs (CUDA_VISIBLE_DEVICES) of each worker: ['0', '0', '0', '1', '1', '1'] for 0,1 x 3
    per GPU; ['0,1,2,3', '4,5,6,7'] for 0-7 with 4 GPUs per trial (a worker is then a group)."""
    if per_trial > 1:
        return [",".join(gpus[i:i + per_trial]) for i in range(0, len(gpus), per_trial)]
    return [g for g in gpus for _ in range(per_gpu)]


def set_memory_share(per_gpu: int, alone: bool = False) -> None:
    """Cap this process's CUDA caching allocator at its share (the whole GPU when alone); no-op without CUDA."""
    import torch

    if per_gpu > 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(1.0 if alone else memory_fraction(per_gpu), 0)


def _release_memory() -> None:
    """Give the cached blocks back, so that a trial alone on this GPU can have them."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def gpu_slot(out_dir: Path, per_gpu: int, alone: bool) -> Iterator[None]:
    """Hold this worker's place on its GPU for one trial: shared with the other packed workers,
    or exclusive (`alone`: waits for the trials running there to end, keeps new ones out, and
    lifts the memory cap). Nothing to hold with one worker per GPU."""
    if per_gpu <= 1:
        yield
        return
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or "none"
    name = f"gpu-{socket.gethostname()}-{gpu}"  # a host name may hold dots: no Path.with_suffix here
    # Closing the files releases both locks, however the block ends.
    with open(Path(out_dir) / f"{name}.gate", "w") as gate, open(Path(out_dir) / f"{name}.lock", "w") as slot:
        fcntl.flock(gate, fcntl.LOCK_EX)  # the turnstile: one worker at a time takes its place
        fcntl.flock(slot, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:  # an alone trial keeps the gate closed: no packed trial starts meanwhile
            fcntl.flock(gate, fcntl.LOCK_UN)
        if alone:
            set_memory_share(per_gpu, alone=True)
        try:
            yield
        finally:
            _release_memory()
            if alone:
                set_memory_share(per_gpu)


def start_mps(gpus: list[str], folder: Path) -> dict[str, str] | None:
    """Start the CUDA MPS control daemon for `gpus`, its pipe and log folders under `folder`;
    returns the environment its clients (the workers) need, or None with one printed line
    when the binary is not on the PATH (the sweep then runs without MPS)."""
    exe = shutil.which(MPS_CONTROL)
    if exe is None:
        print(f"--mps: {MPS_CONTROL} is not on the PATH; running without MPS")
        return None
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(folder / "log")}
    for d in env.values():
        Path(d).mkdir(parents=True, exist_ok=True)
    subprocess.run([exe, "-d"], env={**os.environ, **env, "CUDA_VISIBLE_DEVICES": ",".join(gpus)}, check=True)
    print(f"--mps: MPS daemon started for GPU(s) {','.join(gpus)} (pipes in {env['CUDA_MPS_PIPE_DIRECTORY']})")
    return env


def stop_mps(env: dict[str, str]) -> None:
    """Stop the daemon start_mps started (its clients have exited)."""
    exe = shutil.which(MPS_CONTROL)
    if exe is not None:
        subprocess.run([exe], input="quit\n", text=True, env={**os.environ, **env}, check=False)
