"""The quick learning check: a few epochs of pretraining on real images (the texture tiles
bundled with scikit-image) at 8 px, probed on 2 CV folds (no hold-out: nothing is selected),
against the untrained encoder's probe on the same folds. tests/test_learning.py asserts its
margin; `python benchmarks/learning.py --quick SEEDS` measures the spread the margin comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vicreg.config import Config, config_from_dict, read_yaml, set_key
from vicreg.data import load_datasets, make_folds
from vicreg.evaluate import EvalData, evaluate
from vicreg.evaluate.baselines import score_baseline
from vicreg.train import pretrain

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def recipe(name: str, overrides: dict[str, Any] | None = None) -> Config:
    """The base config of experiments/<name>.yaml (a study file) with progress bars off and
    `overrides` ({dotted key: value}) applied: the learning benchmark's recipe per data set."""
    raw = read_yaml(EXPERIMENTS / f"{name}.yaml")["base"]
    raw["train"]["progress"] = False
    for key, value in (overrides or {}).items():
        set_key(raw, key, value)
    return config_from_dict(raw, source=f"experiments/{name}.yaml")


# A few epochs on the bundled textures at 8 px (a quarter of the 16 px compute), probed on 2 CV
# folds (no hold-out: nothing is selected): small enough for a test on 2 cores.
QUICK = {"data.dataset": "textures", "data.image_size": 8, "data.folds": 2, "data.holdout": 0.0,
         "train.epochs": 3, "eval.epochs": 20}


def quick_learning(seed: int, epochs: int | None = None) -> tuple[float, float]:
    """(pretrained, untrained) CV accuracy of the linear probe under QUICK, with `seed` for the
    pretraining and the untrained encoder alike."""
    cfg = recipe("textures", {**QUICK, "train.seed": seed, **({"train.epochs": epochs} if epochs else {})})
    data = load_datasets(cfg.data)
    folds = make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed)
    ev = EvalData(data.train.images, data.train.labels, folds)
    encoder = pretrain(cfg, data.train.images).model.encoder
    mine = evaluate(encoder, ev, cfg.eval, "cpu", "vicreg").summary["accuracy_mean"]
    floor = score_baseline("random-init", cfg, ev, "cpu", seed).summary["accuracy_mean"]
    return mine, floor
