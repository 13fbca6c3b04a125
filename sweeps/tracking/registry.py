"""The Model Registry: the confirmed best encoder as `vicreg-<study>` (alias `best`), logged as a
code-free pyfunc model (weights and config; sweeps/pyfunc_encoder.py rebuilds it), and read
back as weights only for --predict."""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from vicreg.errors import first_line

from ..text import mask_url
from .store import Tracking


def register_encoder(tr: Tracking, run_id: str, model_name: str, weights_file: Path, example: Any, features: Any,
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

    from ..pyfunc_encoder import WEIGHTS_FILE

    t0 = time.perf_counter()
    signature = infer_signature(example, features)
    mlflow.set_tracking_uri(tr.tracking_uri)
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
            tr.client.get_registered_model(model_name)
        except MlflowException:
            tr.client.create_registered_model(model_name, description="VICReg encoders confirmed best by "
                                                "their study (alias `best`); inputs normalised per channel")
        version = tr.client.create_model_version(model_name, info.model_uri, run_id=run_id, tags=tags)
        tr.client.set_registered_model_alias(model_name, "best", version.version)
    except MlflowException as e:
        print(f"model registry: not available on {mask_url(tr.tracking_uri)} ({first_line(e, 200)}); "
              f"the encoder is logged on run {run_id} only")
        return None
    tr.set_tags(run_id, {"registered_model": f"{model_name} version {version.version}",
                           "registered_model_alias": "best"})
    print(f"model registry: {model_name} version {version.version} (alias best) from run {run_id} "
          f"({time.perf_counter() - t0:.0f} s)")
    return version.version


def best_version(tr: Tracking, model_name: str) -> dict[str, str] | None:
    """The tags of the version the alias `best` points at, with its 'version' and 'run_id'."""
    try:
        v = tr.client.get_model_version_by_alias(model_name, "best")
    except MlflowException:
        return None
    return {**v.tags, "version": v.version, "run_id": v.run_id}


def load_encoder(tr: Tracking, model_uri: str) -> tuple[Any, dict[str, Any], str]:
    """`models:/name@alias` (or /version, or runs:/...) -> (encoder, its resolved config dict,
    run id). Downloads the model's weights file and reads it as weights only
    (vicreg.checkpoint.load_encoder_checkpoint): never MLflow's loader, which would run
    whatever the model's MLmodel names. The caller hands the encoder to vicreg's predict."""
    import mlflow
    import mlflow.artifacts
    import yaml

    from vicreg.checkpoint import load_encoder_checkpoint
    from vicreg.errors import CheckpointError

    from ..pyfunc_encoder import weights_file

    m = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", model_uri)
    if m:
        name, alias, number = m.groups()
        v = (tr.client.get_model_version_by_alias(name, alias) if alias
             else tr.client.get_model_version(name, number))
        run_id = v.run_id
    elif model_uri.startswith("runs:/"):
        run_id = model_uri.removeprefix("runs:/").split("/", 1)[0]
    else:
        raise ValueError(f"--model {model_uri}: expected models:/NAME@ALIAS, models:/NAME/VERSION "
                         f"or runs:/RUN/PATH")
    mlflow.set_tracking_uri(tr.tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, tracking_uri=tr.tracking_uri))
    flavor = (yaml.safe_load((local / "MLmodel").read_text()) or {}).get("flavors", {}).get("python_function", {})
    if flavor.get("loader_module") != "sweeps.pyfunc_encoder" or not flavor.get("data"):
        raise CheckpointError(f"{model_uri}: not a weights-only VICReg encoder (logged by an earlier version as a "
                              f"pickled module, which is not unpickled here); run the study's --confirm again "
                              f"to register the encoder as weights")
    data = (local / str(flavor["data"])).resolve()
    if not data.is_relative_to(local.resolve()):  # an absolute path or '..' in a crafted MLmodel
        raise CheckpointError(f"{model_uri}: its MLmodel's data path {flavor['data']!r} leads outside the model "
                              f"folder; refused")
    raw, encoder = load_encoder_checkpoint(weights_file(data))
    return encoder, raw, run_id
