"""What every trial of one worker shares (SweepContext): the study, its folder, tracking,
the loaded data and folds, scoring against the baselines, and the trial's MLflow run; and how
a worker splits the CPU cores."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from vicreg.config import Config, flatten, primary_metric
from vicreg.imagenet import resolve_init

from .outcome import failure_reason
from .study import StudySpec
from .tracking import Run, Tracking, start_run, tracked

if TYPE_CHECKING:
    import torch

    from vicreg.data import Datasets
    from vicreg.evaluate import EvalReport

SHORT = {"optim.lr": "lr", "data.batch_size": "bs", "model.expander_hidden": "hid", "optim.weight_decay": "wd",
         "data.image_size": "px", "optim.name": "opt"}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_name(number: int, values: dict[str, Any]) -> str:
    """'trial-007 lr=3e-03 bs=32 hid=128 ...': readable in the MLflow UI's run list."""
    parts = []
    for key, value in values.items():
        name = SHORT.get(key, key.split(".")[-1])
        parts.append(f"{name}={value:.0e}" if isinstance(value, float) else f"{name}={value}")
    return " ".join([f"trial-{number:03d}", *parts])


@dataclass
class SweepContext:
    """What every trial of one worker shares: the study, tracking, and loaded data."""

    spec: StudySpec
    out_dir: Path  # runs/<study>: folds.csv, the embedded storage, the claim lock
    overrides: dict[str, Any]  # data.root, train.device, ... applied over the sampled values
    tracking: Tracking | None = None
    parent_id: str | None = None
    worker: int = 0
    per_gpu: int = 1  # workers sharing this worker's GPU (--per-gpu; sweeps/gpu_share.py)
    progress: bool = True
    dry_run: bool = False  # the sweep machinery with a stand-in for training (dry_run_objective)
    group: Any = None  # sweeps/group.py's TrialGroup of a --gpus-per-trial worker's rank 0; None: one process
    work_s: float = 0.0  # seconds the last trial spent training and evaluating (for timings)
    # ... of which: pretraining, the pruning probe, final scoring (MLflow calls excluded)
    phases: dict[str, float] = field(default_factory=dict)
    commit: str = field(default_factory=git_commit)
    _data: dict[tuple, Datasets] = field(default_factory=dict)

    def trial_config(self, trial: optuna.Trial, values: dict[str, Any]) -> Config:
        """Base + sampled values + this run's overrides, with the ImageNet file (if model.init
        takes one) and the stem resolved; stored on the trial."""
        cfg = resolve_init(self.spec.config(values, {**self.overrides, "train.progress": self.progress}))
        trial.set_user_attr("config", flatten(cfg))
        return cfg

    def datasets(self, cfg: Config) -> Datasets:
        """Each (dataset, size) is loaded once per worker and reused by its later trials."""
        d = cfg.data
        loading = {k: v for k, v in dataclasses.asdict(d).items()
                   if k not in ("batch_size", "folds", "fold_seed", "folds_file", "holdout", "holdout_in_pretrain")}
        key = (json.dumps(loading, sort_keys=True, default=str), cfg.model.in_channels)
        if key not in self._data:
            from vicreg.data import load_datasets

            self._data[key] = load_datasets(d, cfg.model.in_channels)
        return self._data[key]

    def folds(self, cfg: Config) -> np.ndarray:
        """The study's folds and hold-out, stored once in out_dir and reused by every trial,
        worker and confirm run."""
        from vicreg.data import make_folds

        train = self.datasets(cfg).train
        path = cfg.data.folds_file or self.out_dir / "folds.csv"
        return make_folds(train.names, train.labels, cfg.data.folds, cfg.data.fold_seed, path, cfg.data.holdout)

    def score(self, cfg: Config, encoder: torch.nn.Module, data: Datasets, folds: np.ndarray,
              device: torch.device, holdout: bool) -> list[EvalReport]:
        """VICReg's report, then the baselines' (computed once per study, in out_dir/baselines).
        The hold-out is scored only when `holdout` (confirm runs), never in a trial."""
        from vicreg.evaluate import EvalData, evaluate
        from vicreg.evaluate.baselines import score_baselines

        scored = EvalData(data.train.images, data.train.labels, folds, metric=primary_metric(cfg.data))
        with self.phase("score"):
            reports = [evaluate(encoder, scored, cfg.eval, device, "vicreg", holdout)]
        with self.phase("baselines"):  # computed by the study's first trial, read from out_dir after
            return reports + score_baselines(cfg, scored, device, cfg.eval.seed, holdout,
                                             self.out_dir / "baselines")

    def trial_run(self, trial: optuna.Trial, cfg: Config, values: dict[str, Any], device: str,
                  continues: tuple[str, int, int] | None) -> AbstractContextManager[Run]:
        """The trial's MLflow run, tracked: its status follows how the block ends
        (sweeps/tracking/runs.py: tracked). A retry continues the failed trial's run: `continues`
        is (its run id, its trial number, epochs done), from sweeps/resume.py's Resume.continues."""
        tags = {"vicreg.study": self.spec.name, "vicreg.trial": str(trial.number),
                "sampler": self.spec.sampler.name, "pruner": self.spec.pruner.name, "dataset": cfg.data.dataset,
                "synthetic": str(cfg.data.dataset == "synthetic").lower(), "device": device,
                "git_commit": self.commit, "worker": str(self.worker), "host": socket.gethostname(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                "workers_per_gpu": str(self.per_gpu)}
        if trial.user_attrs.get("alone"):  # an out-of-memory retry, given its GPU to itself
            tags |= {"alone_on_gpu": "true", "oom_retry_of_trial": str(trial.user_attrs.get("retry_of"))}
        run = Run(None)
        if self.tracking is not None:
            # The trial's seed as a param beside the searched values: confirm runs record theirs
            # (fresh ones, sweeps/confirm.confirm_seeds) the same way.
            run = start_run(self.tracking, self.parent_id, run_name(trial.number, values), cfg,
                                          {**values, "train.seed": cfg.train.seed}, tags, continues)
            trial.set_user_attr("mlflow_run_id", run.run_id)
        return tracked(run, trial, describe=lambda e: failure_reason(e, cfg))

    @contextmanager
    def timed(self) -> Iterator[None]:
        """work_s = the block's seconds less the MLflow calls made in it (per-trial timings)."""
        t0, mlflow0 = time.perf_counter(), self.mlflow_s()
        try:
            yield
        finally:
            self.work_s = time.perf_counter() - t0 - (self.mlflow_s() - mlflow0)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Adds the block's seconds, less its MLflow calls, to phases[name]. The probe runs inside
        pretraining's block: pretraining's own time is that block's less the probe's."""
        t0, mlflow0 = time.perf_counter(), self.mlflow_s()
        try:
            yield
        finally:
            spent = time.perf_counter() - t0 - (self.mlflow_s() - mlflow0)
            self.phases[name] = self.phases.get(name, 0.0) + spent

    def mlflow_s(self) -> float:
        """Seconds this process has spent in MLflow calls so far (0 without tracking)."""
        return self.tracking.seconds if self.tracking is not None else 0.0

    def drop_checkpoints(self, cfg: Config) -> None:
        """A completed or pruned trial's checkpoints go (unless the study keeps them): runs/ must
        not fill the disk. Failed and preempted trials keep theirs for the retry."""
        if cfg.train.checkpoint_dir and not self.spec.keep_checkpoints:
            folder, root = Path(cfg.train.checkpoint_dir).resolve(), (self.out_dir / "checkpoints").resolve()
            if folder.is_relative_to(root):  # only what sweeps/resume.py derived: nothing else is ours to delete
                shutil.rmtree(folder, ignore_errors=True)


def worker_threads(workers: int) -> None:
    """On CPU, split the cores between workers instead of oversubscribing them."""
    import torch

    if not torch.cuda.is_available() and workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

