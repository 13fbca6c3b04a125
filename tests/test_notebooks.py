"""The comparison notebooks run against a real (tiny) study, and the MLflow server serves it."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from sweeps.run import main
from tests.helpers import REPO, start_mlflow_server, write_study

NOTEBOOKS = REPO / "notebooks"
# One pytest-xdist worker runs this file (make test: --dist loadgroup), so the study is swept once.
pytestmark = pytest.mark.xdist_group("notebooks")


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory, synthetic_root, new_store):
    """A 3-trial study that varied the optimiser, in its own project-like folder, its study file
    outside experiments/ (as a user's copy is) and without plots (log_plots: false). Session-wide:
    the worker that runs this file's group may run other files' tests between its tests, and a
    module fixture would then be swept again (8 s of CPU)."""
    tmp = tmp_path_factory.mktemp("project")
    (tmp / "my-studies").mkdir()
    study = write_study(tmp / "my-studies", synthetic_root, log_plots=False, log_checkpoint=True,
                        system_metrics_interval_s=0.5,
                        search={"optim.name": {"choice": ["adam", "sgd"]},
                                "optim.lr": {"float": [1e-4, 1e-2], "log": True}})
    doc = study.read_text().replace("baselines: false", "baselines: true")
    study.write_text(doc.replace("top_k: 0", "top_k: 1").replace("seeds: 0", "seeds: 1"))
    uri = new_store(tmp)
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


@pytest.mark.slow  # notebook kernels against a tiny study: `make test`, not `make test-fast`
@pytest.mark.parametrize("name,params,min_images", [
    ("compare_optimizers.ipynb", 'study = "tiny"\ntracking_uri = "{uri}"', 1),
    ("sweep_report.ipynb", 'study_file = "{study}"\nout = "runs"\ntracking_uri = "{uri}"\nstorage = None', 5),
    ("compare_studies.ipynb", 'study_a = "{study}"\nstudy_b = "{study}"\ntracking_uri = "{uri}"', 1),
])
def test_notebooks_run_and_draw(tiny_store, name: str, params: str, min_images: int) -> None:
    folder, uri = tiny_store
    nb = _run_notebook(name, folder, params.format(uri=uri, study=folder / "my-studies" / "tiny.yaml"))
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert _images(nb) >= min_images
    if name == "sweep_report.ipynb":  # the verdict and the confirmed table, as a reader sees them
        text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                       for c in nb.cells if c.cell_type == "code" for o in c.outputs)
        for baseline in ("random-init", "raw-pixels"):  # the headline first, then the optimistic CV verdict
            assert f"pretraining vs {baseline} on the hold-out:" in text
            assert f"pretraining vs {baseline} on the selection folds (optimistic):" in text
        assert "quote: hold-out kappa" in text and "vicreg holdout_kappa" in text
        assert "vicreg_confusion.png: not logged for this run (the study sets log_plots: false)" in text


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


@pytest.mark.slow  # an MLflow server
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
        assert verdict.startswith("pretraining vs random-init on the hold-out: ") and "95% CI" in verdict
        trial = next(r for r in runs if {"key": "vicreg.role", "value": "trial"} in r["data"]["tags"])
        hist = _get(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={trial['info']['run_id']}&metric_key=loss")
        assert sorted(m["step"] for m in hist["metrics"]) == [1, 2]

        # Every trial and confirm run names its data: the decode cache's digest and a profile.
        children = [r for r in runs if {"key": "vicreg.role", "value": "parent"} not in r["data"]["tags"]]
        inputs = [r["inputs"]["dataset_inputs"] for r in children]
        assert all(len(i) == 1 for i in inputs)
        datasets = [i[0]["dataset"] for i in inputs]
        assert {d["name"] for d in datasets} == {"synthetic-drac22"} and len({d["digest"] for d in datasets}) == 1
        profile = json.loads(datasets[0]["profile"])
        assert profile["images"] == 60 and profile["holdout_images"] == 12 and profile["cv_folds"] == 3
        assert sum(profile["per_grade"].values()) == 60 and profile["image_size"] == 16
        assert {"key": "mlflow.data.context", "value": "train"} in inputs[0][0]["tags"]

        # MLflow's system metrics on the trial runs (CPU and memory here; GPU ones on a GPU machine).
        keys = {m["key"] for m in trial["data"]["metrics"]}
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= keys, keys

        # The confirmed best encoder in the Model Registry, alias best, pointing at its confirm run.
        version = _get(f"{base}/api/2.0/mlflow/registered-models/alias?name=vicreg-tiny&alias=best")["model_version"]
        confirm = next(r for r in runs if {"key": "stage", "value": "confirm"} in r["data"]["tags"])
        assert version["run_id"] == confirm["info"]["run_id"]
        assert {"key": "vicreg.trial", "value": next(t["value"] for t in confirm["data"]["tags"]
                                                       if t["key"] == "confirm_of_trial")} in version["tags"]
        assert {"key": "registered_model", "value": f"vicreg-tiny version {version['version']}"} in \
            confirm["data"]["tags"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow  # the registry of the tiny study
def test_predict_from_the_registry_reproduces_the_checkpoint(tiny_store, synthetic_root, capsys) -> None:
    """The submission written from models:/vicreg-tiny@best equals the one `python -m vicreg
    predict` writes from the same run's checkpoint artifact."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    from vicreg.__main__ import main as vicreg_main

    folder, uri = tiny_store
    run_id = MlflowClient(uri).get_model_version_by_alias("vicreg-tiny", "best").run_id
    ckpt = download_artifacts(run_id=run_id, artifact_path="checkpoint/encoder.pt", tracking_uri=uri,
                              dst_path=str(folder / "download"))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["--config", str(folder / "my-studies" / "tiny.yaml"), "--tracking-uri", uri, "--predict",
                     "--submission", str(folder / "from-registry.csv")]) == 0
        assert vicreg_main(["predict", "--checkpoint", ckpt, "--data-root", str(synthetic_root),
                            "--out", str(folder / "from-checkpoint.csv")]) == 0
        assert main(["--config", str(folder / "my-studies" / "tiny.yaml"), "--tracking-uri", uri, "--predict",
                     "--model", "models:/vicreg-tiny@nope"]) == 2
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --model models:/vicreg-tiny@nope:"), err
    rows = (folder / "from-registry.csv").read_text().splitlines()
    assert rows[0] == "case,class,P0,P1,P2" and len(rows) == 21  # the 20 synthetic test images
    assert (folder / "from-registry.csv").read_bytes() == (folder / "from-checkpoint.csv").read_bytes()

    # For users outside our command line: MLflow's own loader builds the same encoder, from a
    # model that holds weights and a config but no code and no pickled object.
    import mlflow
    import torch

    from vicreg.checkpoint import load_encoder_checkpoint

    mlflow.set_tracking_uri(uri)
    model_dir = Path(download_artifacts(artifact_uri="models:/vicreg-tiny@best", dst_path=str(folder / "model")))
    files = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file())
    assert "data/encoder/encoder.pt" in files and not any(f.endswith((".pkl", ".pth")) for f in files), files
    assert "loader_module: sweeps.pyfunc_encoder" in (model_dir / "MLmodel").read_text()
    pyfunc = mlflow.pyfunc.load_model("models:/vicreg-tiny@best")
    _, encoder = load_encoder_checkpoint(ckpt)
    x = torch.randn(3, 1, 16, 16)
    with torch.no_grad():
        want = encoder(x).numpy()
    np.testing.assert_allclose(pyfunc.predict(x.numpy()), want, rtol=1e-5, atol=1e-6)
