"""Every MLflow call of the project lives in this package (no other module imports mlflow):

  store     the store and the study's experiment: opening it, a timed client, UI links, and
            the low-level logging (metrics, tags, params, artifacts, ending a run)
  runs      the study's parent run and the child run of each trial and confirm run: params,
            per-epoch metrics, dataset input, system metrics, artifacts, how each ends
            (`tracked`, read from sweeps/outcome.py's table), the confirmed verdicts
  registry  the Model Registry: the confirmed encoder as weights, registered and read back
  read      reading runs back for the notebooks (sweeps/analysis.py)

We call MLflow's client API directly instead of optuna-integration's MLflowCallback
(deprecated; one run per finished trial, no per-epoch values, no parent run, pruned and
failed trials logged like completed ones). Every function takes explicit ids, so several
worker processes can log to the same study without shared global state. What callers use
is re-exported here.

MLflow's usage telemetry (MLflow 3 sends usage events to its maintainers from a background
thread) is off unless the user turns it on (MLFLOW_DISABLE_TELEMETRY=false): a study of
patients' images should send nothing anywhere the user did not name, and on a machine without
a route out the thread cost each command 2.5 s of waiting at exit. It is set before the first
import of mlflow, which happens in this package.
"""

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from vicreg.errors import first_line

from ..text import mask_url
from .read import download_artifact, find_parent_run, metric_histories, trial_runs
from .registry import best_version, load_encoder, register_encoder
from .runs import (
    Run,
    close_stale,
    close_stale_confirm,
    log_best,
    log_confirmed,
    log_study_plots,
    open_parent,
    run_params,
    start_run,
    tracked,
    write_artifacts,
)
from .store import PARENT_ATTR, Tracking, TrackingUnavailable, experiment_links, runs_page

__all__ = ["PARENT_ATTR", "Run", "Tracking", "TrackingUnavailable", "best_version", "close_stale",
           "close_stale_confirm", "download_artifact", "experiment_links", "find_parent_run", "first_line",
           "load_encoder", "log_best", "log_confirmed", "log_study_plots", "mask_url", "metric_histories",
           "open_parent", "register_encoder", "run_params", "runs_page", "start_run", "tracked", "trial_runs",
           "write_artifacts"]
