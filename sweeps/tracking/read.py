"""Reading runs back, for the notebooks (sweeps/analysis.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from mlflow.tracking import MlflowClient

if TYPE_CHECKING:
    import pandas as pd


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
                         f"run vicreg-sweep --study {study} first")
    runs = client.search_runs([exp.experiment_id], "tags.`vicreg.role` = 'parent'", max_results=1)
    return runs[0] if runs else None


def metric_histories(run_ids: list[str], keys: Iterable[str], tracking_uri: str | None = None) -> list[tuple]:
    """(run_id, key, step, value) for every logged value of `keys` on each run."""
    client = MlflowClient(tracking_uri)
    return [(rid, key, m.step, m.value) for rid in run_ids for key in keys
            for m in client.get_metric_history(rid, key)]


def download_artifact(run_id: str, path: str, tracking_uri: str | None = None) -> str | None:
    """A run's artifact as a local file path; None when the run has no artifact there."""
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri).download_artifacts(run_id, path)
    except MlflowException:
        return None
