"""One trial, in the shape of Optuna's examples: suggest -> resolved config -> pretrain with
per-epoch reports and probe-based pruning -> evaluation on the study's folds -> value.

Around that core: the trial's MLflow run (sweeps/tracking.py: its status follows how the
trial ended), its per-epoch checkpoints (a retried trial resumes from the failed one's),
and the dry-run objective that stands in for training when checking a set-up.

The trainer (torch, torchvision, scikit-learn) is imported where a trial first needs it, so
that a --dry-run worker starts in about 2 s instead of 8: a many-machine check or a load
test of 8 workers spends its time on the sweep machinery, not on imports."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from vicreg.config import Config, flatten
from vicreg.weights import resolve_init

from .signals import check_interrupted, preemptible
from .study import StudySpec, suggest_all
from .tracking import Run, Tracking, tracked

if TYPE_CHECKING:
    import torch

    from vicreg.data import Datasets
    from vicreg.evaluate import EvalReport
    from vicreg.train import PretrainResult, Report

SHORT = {"optim.lr": "lr", "data.batch_size": "bs", "model.expander_hidden": "hid", "optim.weight_decay": "wd",
         "data.image_size": "px", "optim.name": "opt"}


class TrialFailed(RuntimeError):
    """A trial that failed for a reason worth one line (out of memory, ...)."""


class OutOfMemory(TrialFailed):
    """The trial ran out of GPU memory (torch.OutOfMemoryError); packed, it is retried once alone (worker.py)."""


def objective(trial: optuna.Trial, ctx: SweepContext) -> float:
    """Run one trial; returns the objective. Raises optuna.TrialPruned for pruned or diverged
    trials, TrialFailed/other exceptions for failures (the MLflow run is closed either way)."""
    from vicreg.data import pretrain_selection
    from vicreg.train import pretrain, resolve_device

    values = suggest_all(trial, ctx.spec.search)
    cfg = ctx.trial_config(trial, values)
    device = resolve_device(cfg.train.device)
    run_cfg, resume = trial_checkpoints(trial, ctx, cfg)
    with failures_recorded(trial, cfg), ctx.trial_run(trial, cfg, values, str(device), resume) as run:
        with ctx.timed():  # training and evaluation time, for the per-trial timings
            data, folds = ctx.datasets(cfg), ctx.folds(cfg)
            images, seen = pretrain_selection(data, folds, cfg.data)
            run.log_inputs(data, folds, seen)
            if resume is not None:
                resume.report_history(trial)
            callbacks = [probe_pruner(trial, ctx, data, folds, device), run.log_epoch]
            with run.monitor(ctx.spec.system_metrics_interval_s), preemptible():
                result = pretrain(run_cfg, images, callbacks)
                if result.status in ("diverged", "stopped"):  # stopped: the probe pruner said so
                    ctx.drop_checkpoints(run_cfg)
                    prune(trial, result.reason, result.epochs)
                reports = ctx.score(cfg, result.model.encoder, data, folds, device, holdout=False)
            ctx.drop_checkpoints(run_cfg)
        summary = trial_summary(reports, result)
        value = objective_value(trial, ctx.spec.objective.metric, summary)
        trial.set_user_attr("scores", summary)
        run.complete(cfg, result, reports, summary, ctx.spec.log_plots, ctx.spec.log_checkpoint)
    return value


def dry_run_objective(trial: optuna.Trial, ctx: SweepContext) -> float:
    """A trial with no training (--dry-run): per-epoch values rising towards dry_run_value go
    through trial.report/should_prune and MLflow like real ones. For checking a many-machine
    set-up before spending GPU hours, and for the storage load test and benchmark."""
    values = suggest_all(trial, ctx.spec.search)
    cfg = ctx.trial_config(trial, values)
    final = dry_run_value(values, ctx.spec.search)
    every = max(1, ctx.spec.probe_every)
    with failures_recorded(trial, cfg), ctx.trial_run(trial, cfg, values, "none (dry run)", None) as run:
        for epoch in range(1, cfg.train.epochs + 1):
            check_interrupted()
            value = final * (1 - 0.5 ** epoch)
            metrics = {"loss": 1 - value, "lr": cfg.optim.lr}
            if epoch % every == 0:
                metrics["probe_kappa"] = value
                trial.report(value, epoch)
                if trial.should_prune():
                    trial.set_user_attr("pruned_epoch", epoch)
                    prune(trial, f"pruned at epoch {epoch} (dry-run value {value:.4f})", epoch)
            run.log_metrics(metrics, step=epoch)
        trial.set_user_attr("scores", {"objective": final})
        run.log_metrics({"objective": final}, step=cfg.train.epochs)
        run.end("FINISHED", "COMPLETE", {"stop_reason": "dry run"})
    return final


# --- what every trial of a worker shares ------------------------------------------------


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
    work_s: float = 0.0  # seconds the last trial spent training and evaluating (for timings)
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
        key = (d.dataset, d.root, d.test_root, d.image_size, d.cache_dir, d.skip_bad_images)
        if key not in self._data:
            from vicreg.data import load_datasets

            self._data[key] = load_datasets(d)
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
        from vicreg.baselines import score_baselines
        from vicreg.evaluate import evaluate

        x, y = data.train.images, data.train.labels
        reports = [evaluate(encoder, x, y, folds, cfg.eval, device, "vicreg", score_holdout=holdout)]
        return reports + score_baselines(cfg, x, y, folds, device, cfg.eval.seed, holdout,
                                         self.out_dir / "baselines")

    def trial_run(self, trial: optuna.Trial, cfg: Config, values: dict[str, Any], device: str,
                  resume: Resume | None) -> AbstractContextManager[Run]:
        """The trial's MLflow run (a retry continues the failed trial's run), tracked: its
        status follows how the block ends (sweeps/tracking.py: tracked)."""
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
            cont = None if resume is None or resume.run_id is None else (
                resume.run_id, resume.from_trial, len(resume.state["history"]))
            # The trial's seed as a param beside the searched values: confirm runs record theirs
            # (fresh ones, sweeps/confirm.confirm_seeds) the same way.
            run = self.tracking.start_run(self.parent_id, run_name(trial.number, values), cfg,
                                          {**values, "train.seed": cfg.train.seed}, tags, cont)
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

    def mlflow_s(self) -> float:
        """Seconds this process has spent in MLflow calls so far (0 without tracking)."""
        return self.tracking.seconds if self.tracking is not None else 0.0

    def drop_checkpoints(self, cfg: Config) -> None:
        """A completed or pruned trial's checkpoints go (unless the study keeps them): runs/ must
        not fill the disk. Failed and preempted trials keep theirs for the retry."""
        if cfg.train.checkpoint_dir and not self.spec.keep_checkpoints:
            shutil.rmtree(cfg.train.checkpoint_dir, ignore_errors=True)


# --- pruning, scores, failures ------------------------------------------------------------


def probe_pruner(trial: optuna.Trial, ctx: SweepContext, data: Datasets, folds: np.ndarray,
                 device: torch.device) -> Callable[[Report], str | None]:
    """A pretrain callback: every `probe_every` epochs, the linear-probe kappa on the CV folds
    is reported to Optuna (and logged with the epoch); it stops pretraining when the pruner says so."""
    from vicreg.evaluate import probe_kappa

    every = ctx.spec.probe_every

    def callback(report: Report) -> str | None:
        check_interrupted()
        if report.kind != "epoch" or every <= 0 or (report.epoch + 1) % every:
            return None
        epoch = report.epoch + 1
        kappa = probe_kappa(report.model.encoder, data.train.images, data.train.labels, folds, device)
        trial.set_user_attr("probe_kappa", kappa)
        report.metrics["probe_kappa"] = kappa  # the epoch logger (next callback) sends it with the rest
        trial.report(kappa, epoch)
        if trial.should_prune():
            trial.set_user_attr("pruned_epoch", epoch)
            return f"pruned at epoch {epoch} (probe kappa {kappa:.4f})"
        return None

    return callback


def prune(trial: optuna.Trial, reason: str, epoch: int) -> None:
    """Stop the trial as PRUNED (diverged trials too: they say nothing about the rest)."""
    if "pruned_epoch" not in trial.user_attrs:
        trial.set_user_attr("pruned_epoch", epoch)
    raise optuna.TrialPruned(reason)


def trial_summary(reports: list[EvalReport], result: PretrainResult) -> dict[str, float]:
    """VICReg's CV scores, each baseline's kappas beside them (the same numbers in every
    trial: the floors to read it against), epochs trained and the final loss."""
    summary = reports[0].summary
    for r in reports[1:]:
        summary |= {f"{r.label}_{k}": v for k, v in r.summary.items() if k.startswith("kappa")}
    return summary | {"pretrain_epochs": result.epochs, "final_loss": result.history[-1]["loss"]}


def objective_value(trial: optuna.Trial, metric: str, summary: dict[str, float]) -> float:
    """The study's metric for this trial (also stored in summary['objective'])."""
    value = trial.user_attrs.get("probe_kappa") if metric == "probe_kappa" else summary[metric]
    if value is None or not math.isfinite(value):
        raise TrialFailed(f"objective {metric} is {value} (not a finite number)")
    summary["objective"] = value
    return value


def failure_reason(e: BaseException, cfg: Config) -> str:
    if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
        return f"CUDA out of memory at data.batch_size={cfg.data.batch_size}, data.image_size={cfg.data.image_size}"
    return f"{type(e).__name__}: {e}".splitlines()[0]


@contextmanager
def failures_recorded(trial: optuna.Trial, cfg: Config) -> Iterator[None]:
    """Why a trial stopped, on the trial (user attr `reason`); out of memory becomes a one-line TrialFailed."""
    try:
        yield
    except optuna.TrialPruned as e:
        trial.set_user_attr("reason", str(e))
        raise
    except Exception as e:  # noqa: BLE001 - recorded, then re-raised
        reason = failure_reason(e, cfg)
        trial.set_user_attr("reason", reason)
        if type(e).__name__ == "OutOfMemoryError":
            raise OutOfMemory(reason) from e
        raise


# --- checkpoints and resuming a retried trial ----------------------------------------------


@dataclass
class Resume:
    """Where a retried trial picks up: the trial it retries, its checkpoint folder, the
    checkpoint (None: none usable, so it starts over) and its MLflow run (continued)."""

    from_trial: int
    checkpoint_dir: Path
    state: dict | None
    run_id: str | None

    def report_history(self, trial: optuna.Trial) -> int:
        """Report the stored probe values to Optuna again, so that the pruner sees the same
        history; returns the number of epochs the checkpoint holds."""
        history = self.state["history"]
        for h in history:
            if "probe_kappa" in h:
                trial.report(h["probe_kappa"], h["epoch"])
                trial.set_user_attr("probe_kappa", h["probe_kappa"])
        trial.set_user_attr("resumed_from_trial", self.from_trial)
        trial.set_user_attr("resumed_at_epoch", len(history) + 1)  # the epoch it starts at
        print(f"trial {trial.number}: resumes trial {self.from_trial} at epoch {len(history) + 1} from "
              f"{self.checkpoint_dir}", flush=True)
        return len(history)


def checkpoint_dir(ctx: SweepContext, trial: optuna.Trial) -> tuple[Path, Resume | None]:
    """The trial's checkpoint folder, and how it resumes if it retries a failed trial (ours:
    user attr retry_of; Optuna's heartbeat retry: system attr failed_trial). A retry uses the
    failed trial's folder, which must be reachable here (a shared --out across machines)."""
    own = ctx.out_dir / "checkpoints" / f"trial{trial.number:04d}"
    trials = trial.study.get_trials(deepcopy=False)  # numbers are list positions
    previous = trial.user_attrs.get("retry_of", trials[trial.number].system_attrs.get("failed_trial"))
    if previous is None:
        return own, None
    old = trials[int(previous)]
    folder = Path(old.user_attrs.get("checkpoint_dir", own))
    return folder, Resume(int(previous), folder, None, old.user_attrs.get("mlflow_run_id"))


def trial_checkpoints(trial: optuna.Trial, ctx: SweepContext, cfg: Config) -> tuple[Config, Resume | None]:
    """The config pretrain gets (checkpointing into the trial's folder every `checkpoint_every`
    epochs) and the resume point when the trial retries a failed one whose checkpoint is
    usable here (else None, with one line saying why)."""
    from vicreg.train import resume_state

    ckpt, resume = checkpoint_dir(ctx, trial)
    trial.set_user_attr("checkpoint_dir", str(ckpt))
    run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, checkpoint_dir=str(ckpt), checkpoint_every=ctx.spec.checkpoint_every))
    if resume is not None:
        resume.state = resume_state(run_cfg)
        if resume.state is None:
            print(f"trial {trial.number}: retries trial {resume.from_trial}, but no usable checkpoint is at "
                  f"{ckpt} (with a machine-local --out another machine's checkpoints are not here); "
                  f"starting over", flush=True)
            shutil.rmtree(ckpt, ignore_errors=True)  # a damaged or foreign one must not block pretrain
            resume = None
    return run_cfg, resume


def dry_run_value(values: dict[str, Any], dims: list) -> float:
    """The stand-in objective of --dry-run: a smooth, deterministic function of the sampled
    values in [0, 1], best at 30% of each range (on the log scale for log ranges), so that
    samplers and pruners behave as on a real study."""
    if not dims:
        return 0.5
    total = 0.0
    for d in dims:
        v = values[d.key]
        if d.kind == "by":
            d = d.cases[values[d.by]]
        if d.kind == "choice":
            u = d.choices.index(v) / max(1, len(d.choices) - 1)
        elif d.log:
            u = (math.log(v) - math.log(d.low)) / max(1e-12, math.log(d.high) - math.log(d.low))
        else:
            u = (v - d.low) / max(1e-12, d.high - d.low)
        total += (u - 0.3) ** 2
    return 1.0 - total / len(dims)


def worker_threads(workers: int) -> None:
    """On CPU, split the cores between workers instead of oversubscribing them."""
    import torch

    if not torch.cuda.is_available() and workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
