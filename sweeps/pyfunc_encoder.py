"""The registry model's loader: how `mlflow.pyfunc.load_model("models:/vicreg-<study>@best")`
builds the encoder, for users outside our command line.

The registered model is logged (sweeps/tracking/registry.py: register_encoder) as an MLflow pyfunc
model with `loader_module="sweeps.pyfunc_encoder"` and one data file, `encoder.pt`: the
encoder's weights and its resolved config as plain data, the same format as a sweep run's
`checkpoint/encoder.pt` (vicreg/checkpoint.py). No code and no pickled object is stored in
the artifact: MLflow imports this module from the installed package and calls
`_load_pyfunc(data_path)`, which rebuilds the network from the config and loads the weights
as weights only. This module makes no MLflow call (so it is not under tracking's rule).

Our own `--predict --model` does not go through MLflow's loader at all: it downloads
`encoder.pt` and reads it with the same function (sweeps/tracking/registry.py: load_encoder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WEIGHTS_FILE = "encoder.pt"


def weights_file(data_path: str | Path) -> Path:
    """The weights file in the model's data path (a folder holding WEIGHTS_FILE, or the file)."""
    p = Path(data_path)
    return p / WEIGHTS_FILE if p.is_dir() else p


class EncoderModel:
    """What mlflow.pyfunc's `predict` calls: normalised images (B, C, H, W) float32 ->
    features (B, F) float32, on the CPU, in eval mode. `.encoder` is the torch module (ours,
    so fine-tuning and train/eval switches work)."""

    def __init__(self, encoder, config: dict) -> None:
        self.encoder, self.config = encoder, config

    def predict(self, model_input, params: dict | None = None) -> np.ndarray:
        import torch

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.encoder.eval()(x).float().numpy()


def _load_pyfunc(data_path: str) -> EncoderModel:
    """MLflow's loader-module entry point."""
    from vicreg.checkpoint import load_encoder_checkpoint

    raw, encoder = load_encoder_checkpoint(weights_file(data_path))
    return EncoderModel(encoder, raw)
