"""The MLflow store and the study's experiment: opening it (one line when it cannot be),
a client that times its calls, links to the UI, and the low-level logging every run uses."""

from __future__ import annotations

import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from vicreg.errors import first_line
from vicreg.io import file_lock

from ..text import mask_url

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
            except Exception as e:  # a bad URI or store: one line, before any work
                raise TrackingUnavailable(f"cannot open the MLflow tracking store "
                                          f"{mask_url(tracking_uri) or '(default)'}: {first_line(e)}") from e
        if exp is None:
            try:
                tags = {"vicreg.study": study_name, KIND_TAG: MODEL_TRAINING}
                exp_id = client.create_experiment(study_name, tags=tags)
            except Exception:  # another worker created it first
                exp_id = client.get_experiment_by_name(study_name).experiment_id
        else:
            exp_id = exp.experiment_id
            if exp.tags.get(KIND_TAG) != MODEL_TRAINING:  # made before we tagged
                client.set_experiment_tag(exp_id, KIND_TAG, MODEL_TRAINING)
        return cls(client, exp_id, client.tracking_uri)

    def end(self, run_id: str, status: str, state: str, tags: dict[str, str] | None = None) -> None:
        """status: MLflow's FINISHED | KILLED | FAILED; state: our tag (COMPLETE, PRUNED, FAILED...)."""
        self.set_tags(run_id, {"state": state, **(tags or {})})
        self.client.set_terminated(run_id, status=status)

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

    def fail_running(self, filter_string: str, failure: str) -> list[str]:
        runs = self.client.search_runs([self.experiment_id], f"{filter_string} and attributes.status = 'RUNNING'")
        for r in runs:
            self.end(r.info.run_id, "FAILED", "FAILED", {"failure": failure})
        return [r.info.run_id for r in runs]
