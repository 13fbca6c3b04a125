"""Every MLflow call of the project: one experiment per study, a parent run per study
(params, best-so-far, Optuna's plots, the confirmed verdict), a child run per trial and
per confirm run (params, per-epoch metrics, dataset input, system metrics, artifacts,
a status that tells how it ended), closing the runs of dead workers, the Model Registry,
and reading runs back for the notebooks (sweeps/analysis.py).

We call MLflow's client API directly instead of optuna-integration's MLflowCallback
(deprecated; one run per finished trial, no per-epoch values, no parent run, pruned and
failed trials logged like completed ones). Every function takes explicit ids, so several
worker processes can log to the same study without shared global state.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vicreg.config import Config, flatten, save_config
from vicreg.io import file_lock

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import pandas as pd

    from vicreg.data import Datasets
    from vicreg.evaluate import EvalReport
    from vicreg.train import PretrainResult, Report

if not sys.stderr.isatty():  # MLflow's download bars are carriage-return lines in a log file
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PARENT_ATTR = "mlflow_parent_run_id"  # where the Optuna study remembers its parent run
# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model training.
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


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


def runs_page(server: str, experiment_id: str) -> str:
    """The UI page of an experiment's runs table (the parameter picks MLflow 3's model-training view)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def experiment_links(tracking_uri: str, server: str = "http://127.0.0.1:5000") -> list[str]:
    """'name: URL' of every experiment's runs page in a store (for `make ui`)."""
    client = MlflowClient(tracking_uri)
    return [f"{e.name}: {runs_page(server, e.experiment_id)}" for e in client.search_experiments()
            if e.name != "Default"]


@contextmanager
def _store_init_lock(tracking_uri: str | None) -> Iterator[None]:
    """Several commands opening one new SQLite store at once would run MLflow's schema
    migrations concurrently and can leave it half-migrated; a file lock beside it serialises
    that. Servers (http://...) migrate their own store once, at start."""
    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock):
        yield


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking store could not be opened (the message says which and why)."""


def _check_reachable(tracking_uri: str | None) -> None:
    """A tracking server that does not answer fails in seconds at start, rather than after
    the minutes of retries MLflow's client spends on each call (which carry a running sweep
    through a server restart)."""
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=10)
    except urllib.error.HTTPError:
        pass  # it answered (an auth-protected server may refuse /health)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingUnavailable(f"cannot open the MLflow tracking store {mask_url(tracking_uri)}: "
                                  f"no answer ({reason})") from e


def mask_url(url: str | None) -> str | None:
    """'postgresql://user:secret@host/db' -> 'postgresql://user:***@host/db'."""
    if url is None:
        return None
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class TimedClient:
    """MlflowClient that adds up the seconds spent in its calls (for the per-trial timings)."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        return timed


@dataclass
class Tracking:
    client: MlflowClient  # a TimedClient around it
    experiment_id: str
    tracking_uri: str = ""

    @property
    def seconds(self) -> float:
        """Seconds spent in MLflow calls by this process so far."""
        return self.client.seconds

    @classmethod
    def open(cls, tracking_uri: str | None, study_name: str) -> Tracking:
        _check_reachable(tracking_uri)
        with _store_init_lock(tracking_uri):
            try:
                client = TimedClient(MlflowClient(tracking_uri))  # creates/upgrades a local store
                exp = client.get_experiment_by_name(study_name)
            except Exception as e:  # noqa: BLE001 - a bad URI or store: one line, before any work
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                raise TrackingUnavailable(f"cannot open the MLflow tracking store "
                                          f"{mask_url(tracking_uri) or '(default)'}: {first}") from e
        if exp is None:
            try:
                tags = {"vicreg.study": study_name, KIND_TAG: MODEL_TRAINING}
                exp_id = client.create_experiment(study_name, tags=tags)
            except Exception:  # noqa: BLE001 - another worker created it first
                exp_id = client.get_experiment_by_name(study_name).experiment_id
        else:
            exp_id = exp.experiment_id
            if exp.tags.get(KIND_TAG) != MODEL_TRAINING:  # made before we tagged
                client.set_experiment_tag(exp_id, KIND_TAG, MODEL_TRAINING)
        return cls(client, exp_id, client.tracking_uri)

    # --- runs ---------------------------------------------------------------------

    def parent_run(self, study_name: str, known_id: str | None, tags: dict[str, str]) -> str:
        """The study's parent run: the one the Optuna study remembers, else one tagged as the
        study's parent, else a new one. Reopened (RUNNING) while the sweep runs."""
        run_id = known_id
        if run_id is not None:
            try:
                self.client.get_run(run_id)
            except Exception:  # noqa: BLE001 - the Optuna study outlived this MLflow store
                run_id = None
        if run_id is None:
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.`vicreg.role` = 'parent' and tags.`vicreg.study` = '{study_name}'",
                max_results=1, order_by=["attributes.start_time ASC"])
            run_id = found[0].info.run_id if found else None
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=f"study-{study_name}",
                                         tags={"vicreg.role": "parent", "vicreg.study": study_name, **tags})
            return run.info.run_id
        self.client.update_run(run_id, status="RUNNING")
        return run_id

    def start_trial(self, parent_id: str, run_name: str, params: dict[str, Any],
                    tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name,
                                     tags={"mlflow.parentRunId": parent_id, "vicreg.role": "trial",
                                           "state": "RUNNING", **tags})
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        return run.info.run_id

    def continue_trial(self, run_id: str, tags: dict[str, str], from_trial: int, epochs: int) -> int:
        """Reopen a failed trial's run for the trial that resumes it: tags say which trial runs it
        now and where it resumed (`resumed_from_trial`, `resumed_at_epoch`), the old failure
        stays as `previous_failure`. Continuing (not a new run with the epochs copied) keeps one
        run per configuration, whose curves hold every epoch once. Returns the last epoch
        already logged, which the resumed trial does not log again."""
        run = self.client.get_run(run_id)
        old = run.data.tags
        failure = old.get("failure") or old.get("reason") or old.get("state", "")
        for key in ("failure", "reason"):
            if key in old:
                self.client.delete_tag(run_id, key)
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, {**tags, "state": "RUNNING", "resumed_from_trial": from_trial,
                               "resumed_at_epoch": epochs + 1, "previous_failure": failure})
        history = self.client.get_metric_history(run_id, "loss")
        return max((m.step for m in history), default=0)

    def end(self, run_id: str, status: str, state: str, tags: dict[str, str] | None = None) -> None:
        """status: MLflow's FINISHED | KILLED | FAILED; state: our tag (COMPLETE, PRUNED, FAILED...)."""
        self.set_tags(run_id, {"state": state, **(tags or {})})
        self.client.set_terminated(run_id, status=status)

    # --- values -------------------------------------------------------------------

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        for i in range(0, len(batch), 500):  # MLflow's per-call limit is 1000 metrics
            self.client.log_batch(run_id, metrics=batch[i:i + 500])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        existing = self.client.get_run(run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        if new:
            self.client.log_batch(run_id, params=new)

    def log_artifacts(self, run_id: str, paths: Iterable[str], artifact_path: str | None = None) -> None:
        for p in paths:
            self.client.log_artifact(run_id, str(p), artifact_path)

    def log_dataset(self, run_id: str, name: str, digest: str, source: str, profile: dict[str, Any],
                    context: str = "train") -> None:
        """The data a run used, as an MLflow dataset input (the runs table's Dataset column):
        `digest` identifies the images (the decode cache's key), `profile` says what is in them."""
        ds = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                     profile=json.dumps(profile))
        self.client.log_inputs(run_id, datasets=[DatasetInput(ds, [InputTag("mlflow.data.context", context)])])

    @contextmanager
    def system_metrics(self, run_id: str, interval_s: float) -> Iterator[None]:
        """MLflow's own system-metrics monitor on `run_id` while the block runs: CPU, memory,
        disk and network, and GPU utilisation and memory when NVIDIA's management library
        (nvidia-ml-py) finds a GPU; sampled every `interval_s` seconds (0: off)."""
        if interval_s <= 0:
            yield
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop lines per trial
        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, tracking_uri=self.tracking_uri)
        monitor.start()
        try:
            yield
        finally:
            monitor.finish()

    # --- the Model Registry ---------------------------------------------------------

    def register_encoder(self, run_id: str, model_name: str, weights_file: Path, example: Any, features: Any,
                         tags: dict[str, str]) -> str | None:
        """Log the encoder on `run_id` as an MLflow pyfunc model that holds no code and no pickled
        object: its one data file is `weights_file` (the encoder's weights and resolved config as
        plain data, vicreg/checkpoint.py), and MLflow rebuilds it through the installed
        `sweeps.pyfunc_encoder` loader module. `example` (B, C, H, W) normalised images and
        `features` (B, F), numpy, give the signature and input example. Register it as a new
        version of `model_name` and point the alias `best` at it; the version names its run
        (run_id, tags) and the run names the version (tag `registered_model`).
        Returns the version, or None with one printed line on a store without a registry."""
        import mlflow
        import mlflow.pyfunc
        import torch
        import torchvision
        from mlflow.models import infer_signature

        from .pyfunc_encoder import WEIGHTS_FILE

        t0 = time.perf_counter()
        signature = infer_signature(example, features)
        mlflow.set_tracking_uri(self.tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "encoder"
            data.mkdir()
            shutil.copyfile(weights_file, data / WEIGHTS_FILE)
            with mlflow.start_run(run_id=run_id):  # the run is reopened for the upload, then FINISHED again
                info = mlflow.pyfunc.log_model(
                    name="encoder", loader_module="sweeps.pyfunc_encoder", data_path=str(data),
                    signature=signature, input_example=example,
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                      f"torchvision=={torchvision.__version__.split('+')[0]}"])
        try:
            try:
                self.client.get_registered_model(model_name)
            except MlflowException:
                self.client.create_registered_model(model_name, description="VICReg encoders confirmed best by "
                                                    "their study (alias `best`); inputs normalised per channel")
            version = self.client.create_model_version(model_name, info.model_uri, run_id=run_id, tags=tags)
            self.client.set_registered_model_alias(model_name, "best", version.version)
        except MlflowException as e:
            print(f"model registry: not available on {mask_url(self.tracking_uri)} ({str(e).splitlines()[0][:200]}); "
                  f"the encoder is logged on run {run_id} only")
            return None
        self.set_tags(run_id, {"registered_model": f"{model_name} version {version.version}",
                               "registered_model_alias": "best"})
        print(f"model registry: {model_name} version {version.version} (alias best) from run {run_id} "
              f"({time.perf_counter() - t0:.0f} s)")
        return version.version

    def best_version(self, model_name: str) -> dict[str, str] | None:
        """The tags of the version the alias `best` points at, with its 'version' and 'run_id'."""
        try:
            v = self.client.get_model_version_by_alias(model_name, "best")
        except MlflowException:
            return None
        return {**v.tags, "version": v.version, "run_id": v.run_id}

    def load_encoder(self, model_uri: str) -> tuple[Any, dict[str, Any], str]:
        """`models:/name@alias` (or /version, or runs:/...) -> (encoder, its resolved config dict,
        run id). Downloads the model's weights file and reads it as weights only
        (vicreg.train.load_encoder_checkpoint): never MLflow's loader, which would run
        whatever the model's MLmodel names. The caller hands the encoder to vicreg's predict."""
        import mlflow
        import mlflow.artifacts
        import yaml

        from vicreg.config import CheckpointError
        from vicreg.train import load_encoder_checkpoint

        from .pyfunc_encoder import weights_file

        m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
        if m:
            name, alias, number = m.groups()
            v = (self.client.get_model_version_by_alias(name, alias) if alias
                 else self.client.get_model_version(name, number))
            run_id = v.run_id
        elif model_uri.startswith("runs:/"):
            run_id = model_uri.removeprefix("runs:/").split("/", 1)[0]
        else:
            raise ValueError(f"--model {model_uri}: expected models:/NAME@ALIAS, models:/NAME/VERSION "
                             f"or runs:/RUN/PATH")
        mlflow.set_tracking_uri(self.tracking_uri)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, tracking_uri=self.tracking_uri))
        flavor = (yaml.safe_load((local / "MLmodel").read_text()) or {}).get("flavors", {}).get("python_function", {})
        if flavor.get("loader_module") != "sweeps.pyfunc_encoder" or not flavor.get("data"):
            raise CheckpointError(f"{model_uri}: not a weights-only VICReg encoder (logged by an earlier version as a "
                                  f"pickled module, which is not unpickled here); run the study's --confirm again "
                                  f"to register the encoder as weights")
        raw, encoder = load_encoder_checkpoint(weights_file(local / flavor["data"]))
        return encoder, raw, run_id

    def close_stale(self, study_name: str, trial_number: int) -> list[str]:
        """Mark a dead trial's RUNNING MLflow run(s) FAILED (after a kill -9). Returns run ids."""
        return self._fail_running(f"tags.`vicreg.study` = '{study_name}' and tags.`vicreg.trial` = '{trial_number}'",
                                  "worker died (stale trial)")

    def _fail_running(self, filter_string: str, failure: str) -> list[str]:
        runs = self.client.search_runs([self.experiment_id], f"{filter_string} and attributes.status = 'RUNNING'")
        for r in runs:
            self.end(r.info.run_id, "FAILED", "FAILED", {"failure": failure})
        return [r.info.run_id for r in runs]

    def close_stale_confirm(self, study_name: str) -> list[str]:
        """Mark RUNNING confirm runs FAILED: called under the confirm lock, so their process is gone."""
        return self._fail_running(f"tags.`vicreg.study` = '{study_name}' and tags.stage = 'confirm'",
                                  "confirm process died; resumed by the next one")

    def log_confirmed(self, parent_id: str, ranked: list[dict], report: str) -> None:
        """The confirmed best on the study's parent run: its scores as metrics; one verdict line
        per baseline as a tag, on the hold-out (`verdict.<baseline>`, the headline) and on the
        selection folds (`cv_verdict.<baseline>`), with their numbers as metrics; and the study's
        Markdown `report` as the run's description (MLflow renders it on the run page)."""
        if not ranked:
            return
        best = ranked[0]
        vic = best["scores"].get("vicreg", {})
        metrics = {f"confirmed_{k}": v for k, v in vic.items()}
        tags = {"confirmed_best_trial": best["trial"], "confirm_seeds": best["seeds"],
                "confirm_seed_values": ",".join(str(s) for s in best.get("seed_values", [])),
                "mlflow.note.content": report}
        for prefix, verdicts in (("verdict", best["verdicts"]), ("cv_verdict", best.get("cv_verdicts", []))):
            for v in verdicts:
                name = v["baseline"]
                metrics |= {f"{prefix}_{name}_diff": v["diff"], f"{prefix}_{name}_ci_lo": v["ci95"][0],
                            f"{prefix}_{name}_ci_hi": v["ci95"][1]}
                tags[f"{prefix}.{name}"] = v["line"]
        self.log_metrics(parent_id, metrics)
        self.set_tags(parent_id, tags)

    # --- the study's parent run -----------------------------------------------------

    def open_parent(self, study_name: str, known_id: str | None, tags: dict[str, str],
                    params: dict[str, Any]) -> str:
        """The study's parent run (found again on resume, see parent_run) with its params."""
        parent = self.parent_run(study_name, known_id, tags)
        self.log_params(parent, params)
        return parent

    def log_best(self, parent_id: str, best_value: float, completed: int, tags: dict[str, Any],
                 table: Path) -> None:
        """The best trial so far on the parent run: value and count (step = completed trials),
        its params as tags, and the top-k table."""
        self.log_metrics(parent_id, {"best_value": best_value, "completed_trials": completed}, step=completed)
        self.set_tags(parent_id, tags)
        self.log_artifacts(parent_id, [table])

    def log_study_plots(self, parent_id: str, study: optuna.Study, folder: Path) -> None:
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
        self.log_artifacts(parent_id, paths, "optuna")

    def start_run(self, parent_id: str | None, name: str, cfg: Config, values: dict[str, Any],
                  tags: dict[str, str], resume: tuple[str, int, int] | None = None) -> Run:
        """A trial's or confirm run's child run: its key config values and `values` as params.
        `resume` = (run id, trial it retries, epochs done): that failed trial's run is continued
        instead (continue_trial says why)."""
        if resume is not None:
            run_id, from_trial, epochs = resume
            return Run(self, run_id, self.continue_trial(run_id, tags, from_trial, epochs))
        return Run(self, self.start_trial(parent_id, name, {**run_params(flatten(cfg)), **values}, tags))


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

    def log_inputs(self, data: Datasets, folds: np.ndarray, seen: dict[str, Any]) -> None:
        """What pretraining saw (params) and the data as an MLflow dataset input: name, the
        decode cache's digest, source folder, profile. Once per run (not again on resume)."""
        if self.tracking is None or self.logged:
            return
        from vicreg.data import profile

        self.tracking.log_params(self.run_id, seen)
        self.tracking.log_dataset(self.run_id, data.train.name, data.train.digest, data.train.source,
                                  profile(data, folds, seen))

    def monitor(self, interval_s: float) -> AbstractContextManager:
        """MLflow's system-metrics monitor around the run's work (see Tracking.system_metrics)."""
        if self.tracking is None:
            return nullcontext()
        return self.tracking.system_metrics(self.run_id, interval_s)

    def complete(self, cfg: Config, result: PretrainResult, reports: list[EvalReport], summary: dict[str, float],
                 plots: bool, checkpoint: bool) -> None:
        """Final scores (step = epochs trained), artifacts in one upload, status FINISHED."""
        if self.tracking is None:
            return
        self.log_metrics(summary, step=result.epochs)
        with tempfile.TemporaryDirectory() as tmp:
            write_artifacts(Path(tmp), cfg, result, reports, plots, checkpoint)
            self.tracking.client.log_artifacts(self.run_id, tmp)  # one upload for the folder
        self.end("FINISHED", "COMPLETE", {"stop_reason": result.reason})

    def end(self, status: str, state: str, tags: dict[str, Any] | None = None) -> None:
        """status: MLflow's FINISHED | KILLED | FAILED; state: our tag (COMPLETE, PRUNED, ...)."""
        if self.tracking is not None and not self.ended:
            self.tracking.end(self.run_id, status, state, tags)
        self.ended = True

    def fail(self, reason: str) -> None:
        """FAILED, with the reason as a tag and the traceback of the exception being handled
        (call it from an except block) as the artifact traceback.txt."""
        if self.tracking is not None and not self.ended:
            with tempfile.TemporaryDirectory() as tmp:
                tb = Path(tmp) / "traceback.txt"
                tb.write_text(traceback.format_exc())
                self.tracking.log_artifacts(self.run_id, [tb])
        self.end("FAILED", "FAILED", {"reason": reason[:4000]})


def first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0]


@contextmanager
def tracked(run: Run, trial: optuna.Trial | None = None, describe: Callable[[BaseException], str] = first_line,
            interrupted: str = "interrupted (Ctrl-C)") -> Iterator[Run]:
    """The run's status tells how the block ended, whichever way it did:
      returned           FINISHED, COMPLETE (unless the block ended the run itself)
      optuna.TrialPruned KILLED, PRUNED, with the reason and the trial's pruned_epoch
      Ctrl-C             KILLED, INTERRUPTED
      SIGTERM/max-time   KILLED, PREEMPTED (it resumes from its checkpoint on the next start)
      any exception      FAILED, with describe(e) as reason and the traceback as an artifact
    Exceptions are re-raised for the worker loop, which records the Optuna state."""
    import optuna

    try:
        yield run
    except optuna.TrialPruned as e:
        pruned = trial.user_attrs.get("pruned_epoch") if trial is not None else None
        run.end("KILLED", "PRUNED", {"reason": str(e), "pruned_epoch": pruned})
        raise
    except KeyboardInterrupt as e:
        reason = getattr(e, "reason", None)  # sweeps.signals.Preempted
        if reason:
            run.end("KILLED", "PREEMPTED", {"reason": f"{reason}; resumes from its checkpoint on the next start"})
        else:
            run.end("KILLED", "INTERRUPTED", {"reason": interrupted})
        raise
    except Exception as e:  # noqa: BLE001 - every failure is recorded, then re-raised
        run.fail(describe(e))
        raise
    run.end("FINISHED", "COMPLETE")


def write_artifacts(folder: Path, cfg: Config, result: PretrainResult, reports: list[EvalReport], plots: bool,
                    checkpoint: bool) -> None:
    """A run's artifacts into `folder`: resolved config, per-fold scores, and optionally the
    loss-terms, confusion and curve plots and the encoder checkpoint."""
    save_config(cfg, folder / "config.yaml")
    if plots:
        from vicreg.plots import plot_loss_terms, save_report_plots

        data_name = "synthetic DRAC22-format" if cfg.data.dataset == "synthetic" else cfg.data.dataset
        plot_loss_terms(result.history, folder / "loss_terms.png", f"VICReg loss terms ({data_name})")
        save_report_plots(reports[0], folder)  # baselines: their scores are in the CSV and metrics
    rows = ["model,fold,kappa,accuracy,auc,best_epoch"]
    for r in reports:
        rows += [f"{r.label},{f.fold},{f.metrics['kappa']:.6f},{f.metrics['accuracy']:.6f},"
                 f"{f.metrics['auc']:.6f},{f.best_epoch}" for f in r.folds]
    (folder / "folds_scores.csv").write_text("\n".join(rows) + "\n")
    if checkpoint:
        from vicreg.checkpoint import save as save_weights

        (folder / "checkpoint").mkdir()
        save_weights(folder / "checkpoint" / "encoder.pt",
                     {"encoder": result.model.encoder.state_dict(), "config": flatten(cfg)})


# --- reading runs back (the notebooks' sweeps/analysis.py) -----------------------------


def trial_runs(study: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """mlflow.search_runs of a study's trial runs: one row per run (run_id, start/end_time,
    params.*, metrics.*, tags.*)."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    return mlflow.search_runs(experiment_names=[study], filter_string="tags.`vicreg.role` = 'trial'",
                              max_results=10_000)


def find_parent_run(study: str, tracking_uri: str | None = None):
    """The study's parent run (an mlflow Run), or None; a ValueError when the study has no experiment."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise ValueError(f"no MLflow experiment '{study}' in {tracking_uri or 'the default store'}: "
                         f"run python sweeps/run.py --study {study} first")
    runs = client.search_runs([exp.experiment_id], "tags.`vicreg.role` = 'parent'", max_results=1)
    return runs[0] if runs else None


def metric_histories(run_ids: list[str], keys: Iterable[str], tracking_uri: str | None = None) -> list[tuple]:
    """(run_id, key, step, value) for every logged value of `keys` on each run."""
    client = MlflowClient(tracking_uri)
    return [(rid, key, m.step, m.value) for rid in run_ids for key in keys
            for m in client.get_metric_history(rid, key)]


def download_artifact(run_id: str, path: str, tracking_uri: str | None = None) -> str:
    """A run's artifact as a local file path."""
    return MlflowClient(tracking_uri).download_artifacts(run_id, path)
