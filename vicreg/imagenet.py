"""Where the encoder starts (`model.init`): which local ImageNet weights file, if any.

Nothing is ever downloaded. For `init: imagenet` or `auto` the file is, in order:
`model.weights`, then $VICREG_IMAGENET_WEIGHTS (what the sweep's `--imagenet-weights FILE`
sets for its workers), then torch's own hub cache, where `torchvision.models.resnet18(
weights="DEFAULT")` would have stored it on a machine that once had network:
`$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth` (TORCH_HOME defaults to
$XDG_CACHE_HOME/torch, else ~/.cache/torch, as `torch.hub.get_dir`). `imagenet` without a
file is a one-line ConfigError; `auto` without one starts from random weights.

This module imports no torch, so that the sweep's command line checks it in a second.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from .config import Config, ConfigError, ModelConfig

ENV = "VICREG_IMAGENET_WEIGHTS"
# The standard file names in torchvision's weight enums (ResNet18_Weights.IMAGENET1K_V1.url
# and so on); tests/vicreg/test_model.py checks them against the installed torchvision.
STANDARD_FILES = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet34": ("resnet34-b627a593.pth",),
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),  # V2 (torchvision's DEFAULT), V1
}


def hub_checkpoints_dir() -> Path:
    """torch.hub.get_dir() / "checkpoints", computed the same way without importing torch."""
    home = os.environ.get("TORCH_HOME")
    if not home:
        home = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def find_imagenet_file(arch: str, explicit: str | None = None) -> Path | None:
    """The ImageNet weights file for `arch`: `explicit`, else $VICREG_IMAGENET_WEIGHTS, else the
    hub cache's standard file; None when none is there. An explicit or environment path that
    does not exist is an error (a typo must not silently fall back)."""
    for source, given in (("model.weights", explicit), (ENV, os.environ.get(ENV))):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ConfigError(f"{source}: {path} does not exist (weights are never downloaded)")
            return path
    for name in STANDARD_FILES.get(arch, ()):
        path = hub_checkpoints_dir() / name
        if path.is_file():
            return path
    return None


def init_weights(cfg: ModelConfig) -> Path | None:
    """The file the encoder starts from under `cfg.init`, or None for random weights."""
    if cfg.init == "random":
        return None
    path = find_imagenet_file(cfg.arch, cfg.weights)
    if path is None and cfg.init == "imagenet":
        want = STANDARD_FILES[cfg.arch][0]
        raise ConfigError(f"model.init=imagenet: no weights file for {cfg.arch} (give --imagenet-weights FILE, "
                          f"model.weights or ${ENV}, or put {want} in {hub_checkpoints_dir()}); "
                          f"weights are never downloaded")
    return path


def uses_small_stem(cfg: ModelConfig, image_size: int) -> bool:
    """The CIFAR stem (3x3 stride-1 conv, no max-pool): asked for, or by default at <= 64 px
    unless ImageNet weights are loaded, which keep their own 7x7 stem."""
    pretrained = cfg.init == "imagenet" or init_weights(cfg) is not None
    if pretrained and cfg.small_stem:
        raise ConfigError(f"model.small_stem=true cannot be combined with ImageNet weights (model.init="
                          f"{cfg.init}): they keep their own 7x7 stem")
    return cfg.small_stem if cfg.small_stem is not None else (image_size <= 64 and not pretrained)


def resolve_init(cfg: Config) -> Config:
    """`cfg` with what `model.init` resolved to written out: model.weights the file the encoder
    starts from (None for random weights), model.small_stem true/false and model.in_channels
    (a folder/csv set's, when null), so that the logged config says all three, and a
    checkpoint rebuilds the same network on a machine without the file or the data."""
    from .data.own import resolve_channels  # a folder/csv set's channels, pinned with the rest

    cfg = resolve_channels(cfg)
    path = init_weights(cfg.model)
    model = dataclasses.replace(cfg.model, weights=str(path) if path else None,
                                small_stem=uses_small_stem(cfg.model, cfg.data.image_size))
    return dataclasses.replace(cfg, model=model)
