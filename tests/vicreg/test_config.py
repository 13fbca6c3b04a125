from __future__ import annotations

import pytest

from vicreg.config import ConfigError, load_config, save_config


def _write(tmp_path, text: str):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,match", [
    ("optim:\n  lrr: 0.1\n", r"c.yaml: unknown key 'optim.lrr'"),
    ("optimizer:\n  lr: 0.1\n", r"unknown key 'optimizer'"),
    ("optim:\n  lr: fast\n", r"optim.lr: expected a number, got 'fast'"),
    ("data:\n  batch_size: 3.5\n", r"data.batch_size: expected an integer"),
    ("train:\n  compile: yes please\n", r"train.compile: expected true/false"),
    ("optim:\n  name: rmsprop\n", r"optim.name='rmsprop' must be lars, sgd, adam or adamw"),
    ("augment:\n  crop_ratio: [0.5]\n", r"augment.crop_ratio: expected a list of 2"),
    ("model:\n  init: pretrained\n", r"model.init='pretrained' must be random, imagenet or auto"),
    ("model:\n  weights: w.pth\n", r"model.weights='w.pth' is set but model.init is random"),
    ("optim:\n  warmup_fraction: 1.5\n", r"optim.warmup_fraction=1.5 must be a fraction in \[0, 1\)"),
    ("data: [1, 2]\n", r"data: expected a mapping"),
    ("optim:\n  lr: [\n", r"not valid YAML"),
])
def test_bad_config_files_name_file_and_key(tmp_path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text))


def test_overrides_and_round_trip(tmp_path) -> None:
    p = _write(tmp_path, "optim:\n  name: sgd\n  lr: 1e-3\nmodel:\n  weights: null\n")
    cfg = load_config(p, ["optim.lr=0.05", "data.image_size=224", "augment.blur_p_a=0.5"])
    assert cfg.optim.lr == 0.05 and cfg.optim.name == "sgd" and cfg.data.image_size == 224
    assert cfg.augment.blur_p_a == 0.5 and cfg.augment.blur_p_b == 0.1
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(tmp_path / "out.yaml") == cfg


def test_missing_file_and_bad_override(tmp_path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["optim.lr"])
    with pytest.raises(ConfigError, match="unknown key 'optim.nope'"):
        load_config(None, ["optim.nope=1"])
