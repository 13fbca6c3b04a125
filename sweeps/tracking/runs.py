"""Parent and child runs: a study's parent run (params, best so far, Optuna's plots, the
confirmed verdicts and report), a run per trial and per confirm run (params, per-epoch
metrics, the dataset input, MLflow's system metrics, artifacts), how each ends (`tracked`,
through sweeps/outcome.py's table), and closing the runs of dead workers."""

from __future__ import annotations

import json
import logging
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Param

from vicreg.config import Config, flatten, primary_metric, save_config
from vicreg.errors import first_line

from ..outcome import OUTCOMES, outcome_of
from ..signals import Preempted
from .store import Tracking

if TYPE_CHECKING:
    import numpy as np
    import optuna

    from vicreg.data import Datasets
    from vicreg.data.rows import Placement
    from vicreg.evaluate import EvalReport
    from vicreg.train import PretrainResult, Report

# Fixed settings worth seeing as MLflow params next to the swept ones.
KEY_PARAMS = ("data.dataset", "data.image_size", "data.batch_size", "model.arch", "model.expander_hidden",
              "model.expander_out", "optim.name", "optim.lr", "optim.weight_decay", "train.epochs",
              "train.patience", "eval.protocol", "data.include_test_in_pretrain", "data.holdout",
              "data.holdout_in_pretrain", "data.shuffle_labels", "model.init", "model.weights",
              "model.small_stem", "optim.warmup_epochs", "optim.warmup_fraction")
# Every augmentation value is a param too: the recipe must be readable from the run page.
PARAM_PREFIXES = ("augment.",)
_COMPLETED = OUTCOMES["completed"].mlflow_status, OUTCOMES["completed"].state_tag


def _parent_run(tr: Tracking, study_name: str, known_id: str | None, tags: dict[str, str]) -> str:
    """The study's parent run: the one the Optuna study remembers, else one tagged as the
    study's parent, else a new one. Reopened (RUNNING) while the sweep runs."""
    run_id = known_id
    if run_id is not None:
        try:
            tr.client.get_run(run_id)
        except Exception:  # the Optuna study outlived this MLflow store
            run_id = None
    if run_id is None:
        found = tr.client.search_runs(
            [tr.experiment_id],
            f"tags.`vicreg.role` = 'parent' and tags.`vicreg.study` = '{study_name}'",
            max_results=1, order_by=["attributes.start_time ASC"])
        run_id = found[0].info.run_id if found else None
    if run_id is None:
        run = tr.client.create_run(tr.experiment_id, run_name=f"study-{study_name}",
                                     tags={"vicreg.role": "parent", "vicreg.study": study_name, **tags})
        return run.info.run_id
    tr.client.update_run(run_id, status="RUNNING")
    return run_id


def _start_trial(tr: Tracking, parent_id: str, run_name: str, params: dict[str, Any],
                tags: dict[str, str]) -> str:
    run = tr.client.create_run(tr.experiment_id, run_name=run_name,
                                 tags={"mlflow.parentRunId": parent_id, "vicreg.role": "trial",
                                       "state": "RUNNING", **tags})
    tr.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
    return run.info.run_id


def _continue_trial(tr: Tracking, run_id: str, tags: dict[str, str], from_trial: int, epochs: int) -> int:
    """Reopen a failed trial's run for the trial that resumes it: tags say which trial runs it
    now and where it resumed (`resumed_from_trial`, `resumed_at_epoch`), the old failure
    stays as `previous_failure`. Continuing (not a new run with the epochs copied) keeps one
    run per configuration, whose curves hold every epoch once. Returns the last epoch
    already logged, which the resumed trial does not log again."""
    run = tr.client.get_run(run_id)
    old = run.data.tags
    failure = old.get("failure") or old.get("reason") or old.get("state", "")
    for key in ("failure", "reason"):
        if key in old:
            tr.client.delete_tag(run_id, key)
    tr.client.update_run(run_id, status="RUNNING")
    tr.set_tags(run_id, {**tags, "state": "RUNNING", "resumed_from_trial": from_trial,
                           "resumed_at_epoch": epochs + 1, "previous_failure": failure})
    history = tr.client.get_metric_history(run_id, "loss")
    return max((m.step for m in history), default=0)


def _log_dataset(tr: Tracking, run_id: str, name: str, digest: str, source: str, profile: dict[str, Any],
                context: str = "train") -> None:
    """The data a run used, as an MLflow dataset input (the runs table's Dataset column):
    `digest` identifies the images (the decode cache's key), `profile` says what is in them."""
    ds = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                 profile=json.dumps(profile))
    tr.client.log_inputs(run_id, datasets=[DatasetInput(ds, [InputTag("mlflow.data.context", context)])])


@contextmanager
def _system_metrics(tr: Tracking, run_id: str, interval_s: float) -> Iterator[None]:
    """MLflow's own system-metrics monitor on `run_id` while the block runs: CPU, memory,
    disk and network, and GPU utilisation and memory when NVIDIA's management library
    (nvidia-ml-py) finds a GPU; sampled every `interval_s` seconds (0: off)."""
    if interval_s <= 0:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop lines per trial
    monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, tracking_uri=tr.tracking_uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()


def open_parent(tr: Tracking, study_name: str, known_id: str | None, tags: dict[str, str],
                params: dict[str, Any]) -> str:
    """The study's parent run (found again on resume, see parent_run) with its params."""
    parent = _parent_run(tr, study_name, known_id, tags)
    tr.log_params(parent, params)
    return parent


def log_best(tr: Tracking, parent_id: str, best_value: float, completed: int, tags: dict[str, Any],
             table: Path) -> None:
    """The best trial so far on the parent run: value and count (step = completed trials),
    its params as tags, and the top-k table."""
    tr.log_metrics(parent_id, {"best_value": best_value, "completed_trials": completed}, step=completed)
    tr.set_tags(parent_id, tags)
    tr.log_artifacts(parent_id, [table])


def log_study_plots(tr: Tracking, parent_id: str, study: optuna.Study, folder: Path) -> None:
    """Optuna's history, importances, parallel coordinates and slices as PNGs on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    import optuna.visualization.matplotlib as ovm

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return
    folder.mkdir(parents=True, exist_ok=True)
    plots = {"history": ovm.plot_optimization_history, "parallel_coordinates": ovm.plot_parallel_coordinate,
             "slices": ovm.plot_slice, "importances": ovm.plot_param_importances}
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        for name, fn in plots.items():
            if name == "importances" and len(done) < 3:
                continue  # fANOVA needs a few completed trials
            try:
                ax = fn(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(max(8, fig.get_figwidth()), 5)
                fig.tight_layout()
                fig.savefig(folder / f"{name}.png", dpi=80)
                plt.close(fig)
                paths.append(folder / f"{name}.png")
            except (ValueError, RuntimeError) as e:  # e.g. a single distinct value
                print(f"note: no {name} plot ({e})")
    tr.log_artifacts(parent_id, paths, "optuna")


def log_confirmed(tr: Tracking, parent_id: str, best: dict | None, report: str) -> None:
    """The confirmed best's headline (sweeps/confirm.py: headline) on the study's parent run:
    its scores and quoted hold-out score with its interval as metrics; the primary verdict
    (`verdict`) and one line per baseline as tags, on the hold-out (`verdict.<baseline>`) and
    on the selection folds (`cv_verdict.<baseline>`), with their numbers as metrics; and the
    study's Markdown `report` as the run's description (MLflow renders it on the run page)."""
    if not best:
        return
    vic = best["scores"].get("vicreg", {})
    metrics = {f"confirmed_{k}": v for k, v in vic.items()}
    if best.get("quote"):
        q = best["quote"]
        metrics |= {f"quoted_holdout_{q['metric']}": q["value"], f"quoted_holdout_{q['metric']}_ci_lo": q["ci95"][0],
                    f"quoted_holdout_{q['metric']}_ci_hi": q["ci95"][1]}
    tags = {"confirmed_best_trial": best["trial"], "confirm_seeds": best["seeds"],
            "confirm_seed_values": ",".join(str(s) for s in best.get("seed_values", [])),
            "mlflow.note.content": report}
    if best.get("primary"):
        tags["verdict"] = best["primary"]["line"]
    for prefix, verdicts in (("verdict", best["verdicts"]), ("cv_verdict", best.get("cv_verdicts", []))):
        for v in verdicts:
            name = v["baseline"]
            metrics |= {f"{prefix}_{name}_diff": v["diff"], f"{prefix}_{name}_ci_lo": v["ci95"][0],
                        f"{prefix}_{name}_ci_hi": v["ci95"][1]}
            tags[f"{prefix}.{name}"] = v["line"]
    tr.log_metrics(parent_id, metrics)
    tr.set_tags(parent_id, tags)


def start_run(tr: Tracking, parent_id: str | None, name: str, cfg: Config, values: dict[str, Any],
              tags: dict[str, str], resume: tuple[str, int, int] | None = None) -> Run:
    """A trial's or confirm run's child run: its key config values and `values` as params.
    `resume` = (run id, trial it retries, epochs done): that failed trial's run is continued
    instead (continue_trial says why)."""
    if resume is not None:
        run_id, from_trial, epochs = resume
        return Run(tr, run_id, _continue_trial(tr, run_id, tags, from_trial, epochs))
    return Run(tr, _start_trial(tr, parent_id, name, {**run_params(flatten(cfg)), **values}, tags))


def close_stale(tr: Tracking, study_name: str, trial_number: int) -> list[str]:
    """Mark a dead trial's RUNNING MLflow run(s) FAILED (after a kill -9). Returns run ids."""
    return tr.fail_running(f"tags.`vicreg.study` = '{study_name}' and tags.`vicreg.trial` = '{trial_number}'",
                              "worker died (stale trial)")


def close_stale_confirm(tr: Tracking, study_name: str) -> list[str]:
    """Mark RUNNING confirm runs FAILED: called under the confirm lock, so their process is gone."""
    return tr.fail_running(f"tags.`vicreg.study` = '{study_name}' and tags.stage = 'confirm'",
                              "confirm process died; resumed by the next one")


@dataclass
class Run:
    """One child run, as the code that trains sees it. With `tracking` None (--no-tracking)
    every method does nothing, so that the trial reads the same either way."""

    tracking: Tracking | None
    run_id: str | None = None
    logged: int = 0  # epochs already on the run (a resumed trial continuing it): not logged again
    ended: bool = False

    def log_epoch(self, report: Report) -> None:
        """A pretrain callback: each epoch's metrics, step = epoch."""
        if self.tracking is not None and report.kind == "epoch" and report.epoch + 1 > self.logged:
            self.tracking.log_metrics(self.run_id, report.metrics, step=report.epoch + 1)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if self.tracking is not None:
            self.tracking.log_metrics(self.run_id, metrics, step)

    def log_inputs(self, data: Datasets, folds: np.ndarray, seen: dict[str, Any],
                   placement: Placement | None = None) -> None:
        """What pretraining saw and where its batches come from (params: data.placement is
        device or stream, with its reason), and the data as an MLflow dataset input: name, the
        decode cache's digest, source folder, profile. Once per run (not again on resume)."""
        if self.tracking is None or self.logged:
            return
        from vicreg.data import profile

        where = {} if placement is None else {"data.placement": placement.param(),
                                              "data.placement_reason": placement.reason}
        self.tracking.log_params(self.run_id, {**seen, **where})
        _log_dataset(self.tracking, self.run_id, data.train.name, data.train.digest, data.train.source,
                                  profile(data, folds, seen))

    def monitor(self, interval_s: float) -> AbstractContextManager:
        """MLflow's system-metrics monitor around the run's work (see _system_metrics)."""
        if self.tracking is None:
            return nullcontext()
        return _system_metrics(self.tracking, self.run_id, interval_s)

    def complete(self, cfg: Config, result: PretrainResult, reports: list[EvalReport], summary: dict[str, float],
                 plots: bool, checkpoint: bool) -> None:
        """Final scores (step = epochs trained), artifacts in one upload, status FINISHED."""
        if self.tracking is None:
            return
        self.log_metrics(summary, step=result.epochs)
        with tempfile.TemporaryDirectory() as tmp:
            write_artifacts(Path(tmp), cfg, result, reports, plots, checkpoint)
            self.tracking.client.log_artifacts(self.run_id, tmp)  # one upload for the folder
        self.end(*_COMPLETED, {"stop_reason": result.reason})

    def end(self, status: str, state: str, tags: dict[str, Any] | None = None) -> None:
        """status: MLflow's FINISHED | KILLED | FAILED; state: our tag (COMPLETE, PRUNED, ...)."""
        if self.tracking is not None and not self.ended:
            self.tracking.end(self.run_id, status, state, tags)
        self.ended = True

    def fail(self, reason: str, status: str = "FAILED", state: str = "FAILED") -> None:
        """FAILED, with the reason as a tag and the traceback of the exception being handled
        (call it from an except block) as the artifact traceback.txt."""
        if self.tracking is not None and not self.ended:
            with tempfile.TemporaryDirectory() as tmp:
                tb = Path(tmp) / "traceback.txt"
                tb.write_text(traceback.format_exc())
                self.tracking.log_artifacts(self.run_id, [tb])
        self.end(status, state, {"reason": reason[:4000]})


@contextmanager
def tracked(run: Run, trial: optuna.Trial | None = None,
            describe: Callable[[BaseException], str] = lambda e: first_line(e, with_type=True),
            interrupted: str = "interrupted (Ctrl-C)") -> Iterator[Run]:
    """The run's MLflow status and `state` tag tell how the block ended, as sweeps/outcome.py's
    table says (FINISHED/COMPLETE when it returned, unless the block ended the run itself),
    with what the reader needs beside them: a pruned trial's reason and pruned_epoch; a
    preempted or interrupted one's reason; a failed one's describe(e) and its traceback as an
    artifact. Exceptions are re-raised for the worker loop, which records the Optuna state."""
    import optuna

    try:
        yield run
    except (Exception, KeyboardInterrupt) as e:
        o = outcome_of(e)
        if isinstance(e, optuna.TrialPruned):
            pruned = trial.user_attrs.get("pruned_epoch") if trial is not None else None
            run.end(o.mlflow_status, o.state_tag, {"reason": str(e), "pruned_epoch": pruned})
        elif isinstance(e, Preempted):
            resumes = f"{e.reason}; resumes from its checkpoint on the next start"
            run.end(o.mlflow_status, o.state_tag, {"reason": resumes})
        elif isinstance(e, KeyboardInterrupt):
            run.end(o.mlflow_status, o.state_tag, {"reason": interrupted})
        else:
            run.fail(describe(e), o.mlflow_status, o.state_tag)
        raise
    run.end(*_COMPLETED)


def write_artifacts(folder: Path, cfg: Config, result: PretrainResult, reports: list[EvalReport], plots: bool,
                    checkpoint: bool) -> None:
    """A run's artifacts into `folder`: resolved config, per-fold scores, and optionally the
    loss-terms, confusion and curve plots and the encoder checkpoint."""
    save_config(cfg, folder / "config.yaml")
    if plots:
        from vicreg.plots import plot_loss_terms, save_report_plots

        data_name = "synthetic DRAC22-format" if cfg.data.dataset == "synthetic" else cfg.data.dataset
        plot_loss_terms(result.history, folder / "loss_terms.png", f"VICReg loss terms ({data_name})")
        save_report_plots(reports[0], folder, primary_metric(cfg.data),  # baselines: in the CSV and metrics
                          list(cfg.data.classes) if cfg.data.classes else None)
    from vicreg.evaluate import scores_csv

    (folder / "folds_scores.csv").write_text(scores_csv(reports))
    if checkpoint:
        from vicreg.checkpoint import save as save_weights

        (folder / "checkpoint").mkdir()
        save_weights(folder / "checkpoint" / "encoder.pt",
                     {"encoder": result.model.encoder.state_dict(), "config": flatten(cfg)})


def run_params(flat: dict[str, Any]) -> dict[str, Any]:
    """The config values logged as a run's MLflow params (the whole config is its config.yaml)."""
    return {k: v for k, v in flat.items() if k in KEY_PARAMS or k.startswith(PARAM_PREFIXES)}
