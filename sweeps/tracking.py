"""MLflow bookkeeping through `MlflowClient`: one experiment per study, a parent run per
study, a child run per trial, statuses that tell the truth.

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
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vicreg.io import file_lock

if not sys.stderr.isatty():  # MLflow's download bars are carriage-return lines in a log file
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PARENT_ATTR = "mlflow_parent_run_id"  # where the Optuna study remembers its parent run
# MLflow 3 opens an experiment on its GenAI overview unless it is marked as model training.
KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


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

    def register_encoder(self, run_id: str, model_name: str, encoder: Any, example: Any,
                         tags: dict[str, str]) -> str | None:
        """Log `encoder` (a torch module: normalised images (B, C, H, W) -> features (B, F)) on
        `run_id` as an MLflow PyTorch model with its signature and input example, register it
        as a new version of `model_name` and point the alias `best` at it. The version names
        its run (run_id, tags) and the run names the version (tag `registered_model`).
        Returns the version, or None with one printed line on a store without a registry."""
        import mlflow
        import mlflow.pytorch
        import torch
        import torchvision
        from mlflow.models import infer_signature

        t0 = time.perf_counter()
        with torch.no_grad():
            out = encoder.eval()(example)
        signature = infer_signature(example.numpy(), out.numpy())
        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(run_id=run_id):  # the run is reopened for the upload, then FINISHED again
            # pickle, not MLflow 3's default torch.export program: vicreg's predict fine-tunes
            # and switches train/eval modes, which an exported program cannot.
            info = mlflow.pytorch.log_model(
                encoder, name="encoder", signature=signature, input_example=example.numpy(),
                serialization_format="pickle",
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
        """`models:/name@alias` (or /version, or runs:/...) -> (encoder, its run's resolved config
        dict, run id), through MLflow; the caller hands the encoder to vicreg's predict."""
        import mlflow
        import mlflow.artifacts
        import mlflow.pytorch
        import yaml

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
        encoder = mlflow.pytorch.load_model(model_uri, map_location="cpu")
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="config.yaml",
                                                   tracking_uri=self.tracking_uri)
        return encoder, yaml.safe_load(Path(path).read_text()), run_id

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

    def log_confirmed(self, parent_id: str, ranked: list[dict]) -> None:
        """The confirmed best on the study's parent run: its scores as metrics, and one
        verdict line per baseline as a tag (`verdict.<baseline>`) with its numbers as metrics."""
        if not ranked:
            return
        best = ranked[0]
        vic = best["scores"].get("vicreg", {})
        metrics = {f"confirmed_{k}": v for k, v in vic.items()}
        tags = {"confirmed_best_trial": best["trial"], "confirm_seeds": best["seeds"]}
        for v in best["verdicts"]:
            name = v["baseline"]
            metrics |= {f"verdict_{name}_diff": v["diff"], f"verdict_{name}_ci_lo": v["ci95"][0],
                        f"verdict_{name}_ci_hi": v["ci95"][1]}
            tags[f"verdict.{name}"] = v["line"]
        self.log_metrics(parent_id, metrics)
        self.set_tags(parent_id, tags)
