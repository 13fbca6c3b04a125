"""The comparison notebooks run against a real (tiny) study, and the MLflow server serves it."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from sweeps.run import main
from tests.helpers import start_mlflow_server
from tests.test_sweeps import write_study

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, synthetic_root):
    """A 3-trial study that varied the optimiser, in its own project-like folder."""
    tmp = tmp_path_factory.mktemp("project")
    (tmp / "experiments").mkdir()
    study = write_study(tmp / "experiments", synthetic_root, log_plots=True,
                        search={"optim.name": {"choice": ["adam", "sgd"]},
                                "optim.lr": {"float": [1e-4, 1e-2], "log": True}})
    doc = study.read_text().replace("baselines: false", "baselines: true")
    study.write_text(doc.replace("top_k: 0", "top_k: 1").replace("seeds: 0", "seeds: 1"))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        assert main(["--config", str(study), "--tracking-uri", uri]) == 0
    finally:
        os.chdir(cwd)
    return tmp, uri


def _run_notebook(name: str, folder: Path, params: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = params
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    return nb


def _images(nb: nbformat.NotebookNode) -> int:
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type == "display_data" and "image/png" in o.get("data", {}))


@pytest.mark.parametrize("name,params,min_images", [
    ("compare_optimizers.ipynb", 'study = "tiny"\ntracking_uri = "{uri}"', 1),
    ("sweep_report.ipynb", 'study = "tiny"\ntracking_uri = "{uri}"\nstorage = None', 7),
    ("compare_studies.ipynb", 'study_a = "tiny"\nstudy_b = "tiny"\ntracking_uri = "{uri}"', 1),
])
def test_notebooks_run_and_draw(tiny_store, name: str, params: str, min_images: int) -> None:
    folder, uri = tiny_store
    nb = _run_notebook(name, folder, params.format(uri=uri))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert _images(nb) >= min_images
    if name == "sweep_report.ipynb":  # the verdict and the confirmed table, as a reader sees them
        text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                       for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        assert "pretraining vs random-init:" in text and "pretraining vs raw-pixels:" in text
        assert "quote: hold-out kappa" in text and "vicreg holdout_kappa" in text


def test_committed_notebooks_carry_no_outputs() -> None:
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, path.name
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), path.name


def _get(url: str, data: dict | None = None) -> dict:
    req = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_mlflow_server_serves_the_study(tiny_store) -> None:
    folder, uri = tiny_store
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_mlflow_server(folder, uri, port)
    base = f"http://127.0.0.1:{port}"
    try:
        exp = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=tiny")["experiment"]
        runs = _get(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [exp["experiment_id"]],
                                                          "max_results": 100})["runs"]
        roles = sorted(t["value"] for r in runs for t in r["data"]["tags"] if t["key"] == "vicreg.role")
        assert roles == ["confirm", "parent", "trial", "trial", "trial"]  # 1 configuration x 1 seed confirmed
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in exp["tags"]
        parent = next(r for r in runs if {"key": "vicreg.role", "value": "parent"} in r["data"]["tags"])
        verdict = next(t["value"] for t in parent["data"]["tags"] if t["key"] == "verdict.random-init")
        assert verdict.startswith("pretraining vs random-init: ") and "95% CI" in verdict
        trial = next(r for r in runs if {"key": "vicreg.role", "value": "trial"} in r["data"]["tags"])
        hist = _get(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={trial['info']['run_id']}&metric_key=loss")
        assert sorted(m["step"] for m in hist["metrics"]) == [1, 2]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
