"""One trial: sample -> resolved config -> MLflow child run -> pretrain (epoch logging and
probe-based pruning on callbacks) -> evaluation on the study's folds -> metrics, artifacts.

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
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from vicreg.config import Config, flatten, save_config
from vicreg.weights import resolve_init

from .study import Study, suggest_all
from .tracking import Tracking

if TYPE_CHECKING:
    import torch

    from vicreg.data import Datasets
    from vicreg.evaluate import EvalReport
    from vicreg.train import Report

# Fixed settings worth seeing as MLflow params next to the swept ones.
KEY_PARAMS = ("data.dataset", "data.image_size", "data.batch_size", "model.arch", "model.expander_hidden",
              "model.expander_out", "optim.name", "optim.lr", "optim.weight_decay", "train.epochs",
              "train.patience", "eval.protocol", "data.include_test_in_pretrain", "data.holdout",
              "data.holdout_in_pretrain", "data.shuffle_labels", "model.init", "model.weights",
              "model.small_stem", "optim.warmup_epochs", "optim.warmup_fraction")
# Every augmentation value is a param too: the recipe must be readable from the run page.
PARAM_PREFIXES = ("augment.",)


def run_params(flat: dict[str, Any]) -> dict[str, Any]:
    """The config values logged as a run's MLflow params (the whole config is its config.yaml)."""
    return {k: v for k, v in flat.items() if k in KEY_PARAMS or k.startswith(PARAM_PREFIXES)}
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

    study: Study
    out_dir: Path  # runs/<study>: folds.csv, the embedded storage, the claim lock
    overrides: dict[str, Any]  # data.root, train.device, ... applied over the sampled values
    tracking: Tracking | None = None
    parent_id: str | None = None
    worker: int = 0
    progress: bool = True
    dry_run: bool = False  # run the sweep machinery with a stand-in for training (dry_run_trial)
    work_s: float = 0.0  # seconds the last trial spent training and evaluating (for timings)
    commit: str = field(default_factory=git_commit)
    _data: dict[tuple, Datasets] = field(default_factory=dict)

    def datasets(self, cfg: Config) -> Datasets:
        """Each (dataset, size) is loaded once per worker and reused by its later trials."""
        d = cfg.data
        key = (d.dataset, d.root, d.test_root, d.image_size, d.cache_dir, d.skip_bad_images)
        if key not in self._data:
            from vicreg.data import load_datasets

            self._data[key] = load_datasets(d)
        return self._data[key]

    def folds(self, cfg: Config, data: Datasets) -> np.ndarray:
        """The study's folds and hold-out, stored once in out_dir and reused by every trial,
        worker and confirm run."""
        from vicreg.data import make_folds

        path = cfg.data.folds_file or self.out_dir / "folds.csv"
        return make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed, path,
                          cfg.data.holdout)

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


INTERRUPTED = threading.Event()


def on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C: remember it, then raise as Python's default handler does. The flag is checked
    again at every epoch and between trials, so an interrupt that some library swallows
    (a database driver mid-rollback, say) still stops the sweep at the next boundary."""
    INTERRUPTED.set()
    raise KeyboardInterrupt


class Preempted(KeyboardInterrupt):
    """SIGTERM (what SLURM and cloud schedulers send before a kill) or --max-time: the trial in
    flight stops, keeps its last checkpoint, is marked failed with this reason and is retried
    (resumed from that checkpoint) on the next start."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# The pending preemption; raised at once inside a trial's training, else at the next check.
PREEMPT: dict[str, Any] = {"reason": None, "in_trial": False}


def preempt(reason: str) -> None:
    """The SIGTERM / SIGALRM (--max-time) handler's body."""
    PREEMPT["reason"] = reason
    if PREEMPT["in_trial"]:
        raise Preempted(reason)


def check_interrupted() -> None:
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt
    if PREEMPT["reason"]:
        raise Preempted(PREEMPT["reason"])


@contextmanager
def preemptible() -> Iterator[None]:
    """A trial's long work: a preemption raises inside it instead of waiting for its end."""
    PREEMPT["in_trial"] = True
    try:
        check_interrupted()
        yield
    finally:
        PREEMPT["in_trial"] = False


class TrialFailed(RuntimeError):
    """A trial that failed for a reason worth one line (out of memory, ...)."""


def _probe_callback(trial: optuna.Trial, ctx: SweepContext, data: Datasets,
                    folds: np.ndarray, device: torch.device):
    from vicreg.evaluate import probe_kappa

    every = ctx.study.probe_every

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


def log_dataset(tr: Tracking, run_id: str, data: Datasets, folds: np.ndarray, seen: dict) -> None:
    """The run's data as an MLflow dataset input: name, the decode cache's digest, source, profile."""
    from vicreg.data import profile

    tr.log_dataset(run_id, data.train.name, data.train.digest, data.train.source, profile(data, folds, seen))


def monitored(ctx: SweepContext, run_id: str | None):
    """MLflow's system-metrics monitor around a run's work (none without tracking or in a dry run)."""
    if ctx.tracking is None or run_id is None or ctx.dry_run:
        return nullcontext()
    return ctx.tracking.system_metrics(run_id, ctx.study.system_metrics_interval_s)


def epoch_logger(ctx: SweepContext, run_id: str, logged: int = 0):
    """Each epoch's metrics on the run, step = epoch; epochs up to `logged` are already there
    (a resumed trial continuing its run): a recomputed epoch is not logged twice."""
    def callback(report: Report) -> None:
        if report.kind == "epoch" and report.epoch + 1 > logged:
            ctx.tracking.log_metrics(run_id, report.metrics, step=report.epoch + 1)

    return callback


@dataclass
class Resume:
    """Where a retried trial picks up: the trial it retries, its checkpoint folder, the
    checkpoint (None: none usable, so it starts over) and its MLflow run (continued)."""

    from_trial: int
    checkpoint_dir: Path
    state: dict | None
    run_id: str | None


def checkpoint_dir(ctx: SweepContext, trial: optuna.Trial) -> tuple[Path, Resume | None]:
    """The trial's checkpoint folder, and how it resumes if it retries a failed trial (ours:
    user attr retry_of; Optuna's heartbeat retry: system attr failed_trial). A retry uses the
    failed trial's folder, which must be reachable here (a shared --out across machines)."""
    frozen = trial.study.trials
    previous = trial.user_attrs.get("retry_of", frozen[trial.number].system_attrs.get("failed_trial"))
    own = ctx.out_dir / "checkpoints" / f"trial{trial.number:04d}"
    if previous is None:
        return own, None
    old = frozen[int(previous)]
    folder = Path(old.user_attrs.get("checkpoint_dir", own))
    return folder, Resume(int(previous), folder, None, old.user_attrs.get("mlflow_run_id"))


def trial_checkpoints(trial: optuna.Trial, ctx: SweepContext, cfg: Config) -> tuple[Config, Path, Resume | None]:
    """The config pretrain gets (checkpointing into the trial's folder every
    `checkpoint_every` epochs), the folder, and the resume point when the trial retries a
    failed one whose checkpoint is usable here (else None, with one line saying why)."""
    from vicreg.train import resume_state

    ckpt, resume = checkpoint_dir(ctx, trial)
    trial.set_user_attr("checkpoint_dir", str(ckpt))
    run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, checkpoint_dir=str(ckpt), checkpoint_every=ctx.study.checkpoint_every))
    if resume is not None:
        resume.state = resume_state(run_cfg)
        if resume.state is None:
            print(f"trial {trial.number}: retries trial {resume.from_trial}, but no usable checkpoint is at "
                  f"{ckpt} (with a machine-local --out another machine's checkpoints are not here); "
                  f"starting over", flush=True)
            shutil.rmtree(ckpt, ignore_errors=True)  # a damaged or foreign one must not block pretrain
            resume = None
    return run_cfg, ckpt, resume


def _reuse_history(trial: optuna.Trial, resume: Resume) -> int:
    """Report a resumed trial's stored probe values to Optuna again, so that the pruner sees the
    same history; returns the number of epochs the checkpoint holds."""
    history = resume.state["history"]
    for h in history:
        if "probe_kappa" in h:
            trial.report(h["probe_kappa"], h["epoch"])
            trial.set_user_attr("probe_kappa", h["probe_kappa"])
    trial.set_user_attr("resumed_from_trial", resume.from_trial)
    trial.set_user_attr("resumed_at_epoch", len(history) + 1)  # the epoch it starts at
    return len(history)


def log_run_artifacts(ctx: SweepContext, run_id: str, cfg: Config, result, reports, folder: Path) -> None:
    """Plots, resolved config, per-fold scores and the encoder checkpoint, in one upload."""
    import torch

    from vicreg.plots import plot_loss_terms, save_report_plots

    save_config(cfg, folder / "config.yaml")
    if ctx.study.log_plots:
        data_name = "synthetic DRAC22-format" if cfg.data.dataset == "synthetic" else cfg.data.dataset
        plot_loss_terms(result.history, folder / "loss_terms.png", f"VICReg loss terms ({data_name})")
        save_report_plots(reports[0], folder)  # baselines: their scores are in the CSV and metrics
    rows = ["model,fold,kappa,accuracy,auc,best_epoch"]
    for r in reports:
        rows += [f"{r.label},{f.fold},{f.metrics['kappa']:.6f},{f.metrics['accuracy']:.6f},"
                 f"{f.metrics['auc']:.6f},{f.best_epoch}" for f in r.folds]
    (folder / "folds_scores.csv").write_text("\n".join(rows) + "\n")
    if ctx.study.log_checkpoint:
        (folder / "checkpoint").mkdir()
        torch.save({"encoder": result.model.encoder.state_dict(), "config": flatten(cfg)},
                   folder / "checkpoint" / "encoder.pt")
    ctx.tracking.client.log_artifacts(run_id, str(folder))  # one upload for the folder


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


def dry_run_trial(trial: optuna.Trial, ctx: SweepContext, cfg: Config, values: dict[str, Any],
                  run_id: str | None) -> tuple[float, str | None]:
    """A trial with no training: per-epoch values (rising towards dry_run_value) go through
    trial.report/should_prune and MLflow like real ones. Returns (value, pruned reason or None).
    For checking a many-machine set-up before spending GPU hours, and for the storage load
    test and benchmark."""
    final = dry_run_value(values, ctx.study.search)
    every = max(1, ctx.study.probe_every)
    for epoch in range(1, cfg.train.epochs + 1):
        check_interrupted()
        value = final * (1 - 0.5 ** epoch)
        metrics = {"loss": 1 - value, "lr": cfg.optim.lr}
        if epoch % every == 0:
            metrics["probe_kappa"] = value
            trial.report(value, epoch)
            if trial.should_prune():
                trial.set_user_attr("pruned_epoch", epoch)
                return value, f"pruned at epoch {epoch} (dry-run value {value:.4f})"
        if run_id is not None:
            ctx.tracking.log_metrics(run_id, metrics, step=epoch)
    return final, None


def _pruned(trial: optuna.Trial, ctx: SweepContext, run_id: str | None, reason: str, epochs: int) -> None:
    """Record why the trial stopped early, end its MLflow run as KILLED/PRUNED, raise TrialPruned."""
    trial.set_user_attr("reason", reason)
    if ctx.tracking is not None:
        ctx.tracking.end(run_id, "KILLED", "PRUNED",
                         {"reason": reason, "pruned_epoch": trial.user_attrs.get("pruned_epoch", epochs)})
    raise optuna.TrialPruned(reason)


def _drop_checkpoints(ctx: SweepContext, folder: Path | None) -> None:
    """A completed or pruned trial's checkpoints go (unless the study keeps them): runs/ must
    not fill the disk. Failed and preempted trials keep theirs for the retry."""
    if folder is not None and not ctx.study.keep_checkpoints:
        shutil.rmtree(folder, ignore_errors=True)


def _work_done(ctx: SweepContext, started: tuple[float, float]) -> None:
    """Training+evaluation seconds since `started`, less the MLflow logging done in callbacks."""
    mlflow = ctx.tracking.seconds - started[1] if ctx.tracking is not None else 0.0
    ctx.work_s = time.perf_counter() - started[0] - mlflow


def objective(trial: optuna.Trial, ctx: SweepContext) -> float:
    """Run one trial; returns the objective. Raises optuna.TrialPruned for pruned or diverged
    trials, TrialFailed/other exceptions for failures (the MLflow run is closed either way)."""
    study = ctx.study
    values = suggest_all(trial, study.search)
    # The ImageNet file (if model.init takes one) and the stem, written into the logged config.
    cfg = resolve_init(study.config(values, {**ctx.overrides, "train.progress": ctx.progress}))
    trial.set_user_attr("config", flatten(cfg))
    if not ctx.dry_run:
        from vicreg.train import resolve_device

        device = resolve_device(cfg.train.device)
    else:
        device = "none (dry run)"
    tr = ctx.tracking
    run_id, started, logged = None, None, 0
    # Per-epoch checkpoints: a retried trial resumes instead of restarting.
    run_cfg, ckpt, resume = (cfg, None, None) if ctx.dry_run else trial_checkpoints(trial, ctx, cfg)
    if tr is not None:
        flat = flatten(cfg)
        params = {**run_params(flat), **values}
        tags = {"vicreg.study": study.name, "vicreg.trial": str(trial.number),
                "sampler": study.sampler["name"], "pruner": study.pruner["name"], "dataset": cfg.data.dataset,
                "synthetic": str(cfg.data.dataset == "synthetic").lower(), "device": str(device),
                "git_commit": ctx.commit, "worker": str(ctx.worker), "host": socket.gethostname(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
        if resume is not None and resume.run_id is not None:
            # The new trial continues the failed trial's run: one run per configuration whose
            # per-epoch curves hold each epoch once (tracking.continue_trial says why).
            run_id = resume.run_id
            logged = tr.continue_trial(run_id, tags, resume.from_trial, len(resume.state["history"]))
        else:
            run_id = tr.start_trial(ctx.parent_id, run_name(trial.number, values), params, tags)
        trial.set_user_attr("mlflow_run_id", run_id)
    try:
        if ctx.dry_run:
            value, reason = dry_run_trial(trial, ctx, cfg, values, run_id)
            if reason is not None:
                _pruned(trial, ctx, run_id, reason, cfg.train.epochs)
            trial.set_user_attr("scores", {"objective": value})
            if tr is not None:
                tr.log_metrics(run_id, {"objective": value}, step=cfg.train.epochs)
                tr.end(run_id, "FINISHED", "COMPLETE", {"stop_reason": "dry run"})
            return value
        from vicreg.data import pretrain_selection
        from vicreg.train import pretrain

        started = (time.perf_counter(), tr.seconds if tr is not None else 0.0)
        data = ctx.datasets(cfg)
        folds = ctx.folds(cfg, data)
        images, seen = pretrain_selection(data, folds, cfg.data)
        if tr is not None and not logged:
            tr.log_params(run_id, seen)
            log_dataset(tr, run_id, data, folds, seen)
        if resume is not None:
            done = _reuse_history(trial, resume)
            print(f"trial {trial.number}: resumes trial {resume.from_trial} at epoch {done + 1} from {ckpt}",
                  flush=True)
        callbacks = [_probe_callback(trial, ctx, data, folds, device)]
        if tr is not None:
            callbacks.append(epoch_logger(ctx, run_id, logged))
        with monitored(ctx, run_id), preemptible():
            result = pretrain(run_cfg, images, callbacks)
            if result.status in ("diverged", "stopped"):
                _work_done(ctx, started)
                _drop_checkpoints(ctx, ckpt)
                _pruned(trial, ctx, run_id, result.reason, result.epochs)
            reports = ctx.score(cfg, result.model.encoder, data, folds, device, holdout=False)
        _work_done(ctx, started)
        _drop_checkpoints(ctx, ckpt)
        summary = reports[0].summary
        for r in reports[1:]:  # the same numbers in every trial: the floors to read it against
            summary |= {f"{r.label}_{k}": v for k, v in r.summary.items() if k.startswith("kappa")}
        summary["pretrain_epochs"] = result.epochs
        summary["final_loss"] = result.history[-1]["loss"]
        value = trial.user_attrs.get("probe_kappa") if study.metric == "probe_kappa" else summary[study.metric]
        if value is None or not math.isfinite(value):
            raise TrialFailed(f"objective {study.metric} is {value} (not a finite number)")
        summary["objective"] = value
        trial.set_user_attr("scores", summary)
        if tr is not None:
            tr.log_metrics(run_id, summary, step=result.epochs)
            with tempfile.TemporaryDirectory() as tmp:
                log_run_artifacts(ctx, run_id, cfg, result, reports, Path(tmp))
            tr.end(run_id, "FINISHED", "COMPLETE", {"stop_reason": result.reason})
        return value
    except optuna.TrialPruned:
        raise
    except KeyboardInterrupt as e:
        if tr is not None:
            if isinstance(e, Preempted):
                tr.end(run_id, "KILLED", "PREEMPTED", {"reason": f"{e.reason}; resumes from its checkpoint on the next "
                                                                  f"start"})
            else:
                tr.end(run_id, "KILLED", "INTERRUPTED", {"reason": "interrupted (Ctrl-C)"})
        raise
    except Exception as e:  # noqa: BLE001 - every failure is recorded, then re-raised
        if started is not None and not ctx.work_s:
            _work_done(ctx, started)
        oom = type(e).__name__ == "OutOfMemoryError"  # torch.OutOfMemoryError, without importing torch
        reason = (f"CUDA out of memory at data.batch_size={cfg.data.batch_size}, "
                  f"data.image_size={cfg.data.image_size}" if oom else f"{type(e).__name__}: {e}".splitlines()[0])
        trial.set_user_attr("reason", reason)
        if tr is not None:
            with tempfile.TemporaryDirectory() as tmp:
                tb = Path(tmp) / "traceback.txt"
                tb.write_text(traceback.format_exc())
                tr.log_artifacts(run_id, [tb])
            tr.end(run_id, "FAILED", "FAILED", {"reason": reason[:4000]})
        if oom:
            raise TrialFailed(reason) from e
        raise


def worker_threads(workers: int) -> None:
    """On CPU, split the cores between workers instead of oversubscribing them."""
    import torch

    if not torch.cuda.is_available() and workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
