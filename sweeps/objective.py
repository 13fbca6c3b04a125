"""One trial, in the shape of Optuna's examples: suggest -> resolved config -> pretrain with
per-epoch reports and probe-based pruning -> evaluation on the study's folds -> value.

Around that core, elsewhere: what a worker's trials share (sweeps/context.py: data, folds,
scoring, the trial's MLflow run), resuming a retried trial from its checkpoint
(sweeps/resume.py), and how a trial ends (sweeps/outcome.py). Here: the objective, the probe
pruner, and the dry-run objective that stands in for training when checking a set-up.

The trainer (torch, torchvision, scikit-learn) is imported where a trial first needs it, so
that a --dry-run worker starts in about 2 s instead of 8: a many-machine check or a load
test of 8 workers spends its time on the sweep machinery, not on imports."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from vicreg.config import primary_metric

from .context import SweepContext
from .outcome import Diverged, TrialFailed, failures_recorded
from .resume import trial_checkpoints
from .signals import check_interrupted, preemptible
from .space import suggest_all

if TYPE_CHECKING:
    import torch

    from vicreg.data import Datasets
    from vicreg.evaluate import EvalReport
    from vicreg.train import PretrainResult, Report


def objective(trial: optuna.Trial, ctx: SweepContext) -> float:
    """Run one trial; returns the objective. Raises optuna.TrialPruned for pruned or diverged
    trials, TrialFailed/other exceptions for failures (the MLflow run is closed either way)."""
    from vicreg.data import pretrain_selection
    from vicreg.train import data_placement, pretrain, resolve_device

    values = suggest_all(trial, ctx.spec.search)
    cfg = ctx.trial_config(trial, values)
    device = resolve_device(cfg.train.device)
    run_cfg, resume = trial_checkpoints(trial, ctx, cfg)
    with failures_recorded(trial, cfg), ctx.trial_run(trial, cfg, values, str(device),
                                                              resume.continues() if resume else None) as run:
        with ctx.timed():  # training and evaluation time, for the per-trial timings
            data, folds = ctx.datasets(cfg), ctx.folds(cfg)
            images, seen = pretrain_selection(data, folds, cfg.data)
            where = data_placement(run_cfg, images, ctx.per_gpu)
            run.log_inputs(data, folds, seen, where)
            if not ctx.progress:  # a worker's log (pretrain prints it itself when it shows progress)
                print(f"trial {trial.number}: data {'on the device' if where.on_device else 'streamed'} "
                      f"({where.reason})", flush=True)
            if resume is not None:
                resume.report_history(trial)
            callbacks = [probe_pruner(trial, ctx, data, folds, device, primary_metric(cfg.data)), run.log_epoch]
            with run.monitor(ctx.spec.system_metrics_interval_s), preemptible():
                with ctx.phase("pretrain"):
                    if ctx.group is not None:  # --gpus-per-trial: the group's other ranks train with this one
                        ctx.group.share(run_cfg)
                    result = pretrain(run_cfg, images, callbacks, ctx.per_gpu)
                if result.status in ("diverged", "stopped"):  # stopped: the probe pruner said so
                    ctx.drop_checkpoints(run_cfg)
                    prune(trial, result.reason, result.epochs, diverged=result.status == "diverged")
                reports = ctx.score(cfg, result.model.encoder, data, folds, device, holdout=False)
            ctx.drop_checkpoints(run_cfg)
        summary = trial_summary(reports, result, primary_metric(cfg.data))
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
                metrics[f"probe_{primary_metric(cfg.data)}"] = value
                trial.report(value, epoch)
                if trial.should_prune():
                    trial.set_user_attr("pruned_epoch", epoch)
                    prune(trial, f"pruned at epoch {epoch} (dry-run value {value:.4f})", epoch)
            run.log_metrics(metrics, step=epoch)
        trial.set_user_attr("scores", {"objective": final})
        run.log_metrics({"objective": final}, step=cfg.train.epochs)
        run.end("FINISHED", "COMPLETE", {"stop_reason": "dry run"})
    return final


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


def probe_pruner(trial: optuna.Trial, ctx: SweepContext, data: Datasets, folds: np.ndarray,
                 device: torch.device, metric: str = "kappa") -> Callable[[Report], str | None]:
    """A pretrain callback: every `probe_every` epochs, the linear probe's primary score
    (`metric`: kappa, or f1 for unordered classes) on the CV folds is reported to Optuna (and
    logged with the epoch as probe_<metric>); it stops pretraining when the pruner says so."""
    from vicreg.evaluate import probe_score

    every, key = ctx.spec.probe_every, f"probe_{metric}"

    def callback(report: Report) -> str | None:
        check_interrupted()
        if report.kind != "epoch" or every <= 0 or (report.epoch + 1) % every:
            return None
        epoch = report.epoch + 1
        with ctx.phase("probe"):
            value = probe_score(report.model.encoder, data.train.images, data.train.labels, folds, device, metric,
                                ctx.spec.probe_max_images)
        trial.set_user_attr(key, value)
        report.metrics[key] = value  # the epoch logger (next callback) sends it with the rest
        trial.report(value, epoch)
        if trial.should_prune():
            trial.set_user_attr("pruned_epoch", epoch)
            return f"pruned at epoch {epoch} (probe {metric} {value:.4f})"
        return None

    return callback


def prune(trial: optuna.Trial, reason: str, epoch: int, diverged: bool = False) -> None:
    """Stop the trial as PRUNED (Diverged for a non-finite loss: pruned too, sweeps/outcome.py).

    A diverged trial is also marked infeasible (Optuna's constraint "diverged" = 1): TPE then
    counts it among the bad trials even when it reported a good probe before its loss blew up
    and too few trials have completed to fill TPE's good group (early in a study, where a
    pruned trial's last report could otherwise rank it good). benchmarks/divergence.py
    measures how many trials a sweep spends in a divergent region."""
    if "pruned_epoch" not in trial.user_attrs:
        trial.set_user_attr("pruned_epoch", epoch)
    if diverged:
        trial.set_constraint("diverged", 1.0)
    raise (Diverged if diverged else optuna.TrialPruned)(reason)


def trial_summary(reports: list[EvalReport], result: PretrainResult, metric: str = "kappa") -> dict[str, float]:
    """VICReg's CV scores, each baseline's primary scores (`metric`) beside them (the same
    numbers in every trial: the floors to read it against), epochs trained and the final loss."""
    summary = reports[0].summary
    for r in reports[1:]:
        summary |= {f"{r.label}_{k}": v for k, v in r.summary.items() if k.startswith(metric)}
    return summary | {"pretrain_epochs": result.epochs, "final_loss": result.history[-1]["loss"]}


def objective_value(trial: optuna.Trial, metric: str, summary: dict[str, float]) -> float:
    """The study's metric for this trial (also stored in summary['objective'])."""
    value = trial.user_attrs.get(metric) if metric.startswith("probe_") else summary[metric]
    if value is None or not math.isfinite(value):
        raise TrialFailed(f"objective {metric} is {value} (not a finite number)")
    summary["objective"] = value
    return value

