"""ResNet encoder + expander MLP (VICReg's joint-embedding branch, shared by both views)."""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from .config import ModelConfig
from .imagenet import init_weights, uses_small_stem

_FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


__all__ = ["build_encoder", "build_expander", "build_model", "load_torchvision_weights", "uses_small_stem",
           "VICRegModel"]


def build_encoder(cfg: ModelConfig, image_size: int, zero_init_residual: bool | None = None) -> nn.Module:
    """torchvision ResNet without its classifier: (B, C, H, W) -> (B, feature_dim).

    Randomly initialised, with zero-init residuals when `zero_init_residual` (default:
    `cfg.zero_init_residual`) is set (the reference VICReg backbone, Goyal et al. 2017; a
    degenerate feature extractor if never trained: every residual branch outputs 0), or,
    under `cfg.init` imagenet/auto, loaded
    from a local torchvision state-dict file (vicreg.imagenet says which; never downloaded).
    Inputs of 64 px and below get the CIFAR stem (3x3 stride-1 conv, no max-pool) unless
    `cfg.small_stem` says otherwise or ImageNet weights are loaded, since a 7x7/2 conv + pool
    leaves a 32 px image 2x2 pixels by the last stage.
    """
    small = uses_small_stem(cfg, image_size)
    weights = init_weights(cfg)
    zero = cfg.zero_init_residual if zero_init_residual is None else zero_init_residual
    net = getattr(torchvision.models, cfg.arch)(weights=None, zero_init_residual=zero)
    if weights is not None:
        load_torchvision_weights(net, weights)
    if cfg.in_channels is None:
        raise ValueError("model.in_channels is null: resolve it from the data first (vicreg.imagenet.resolve_init)")
    old = net.conv1
    if small:
        net.conv1 = nn.Conv2d(cfg.in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif cfg.in_channels != 3:
        net.conv1 = nn.Conv2d(cfg.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if weights is not None:
            # Grey input: sum the RGB filters, the usual way to keep pretrained responses.
            with torch.no_grad():
                net.conv1.weight.copy_(old.weight.sum(dim=1, keepdim=True))
    net.fc = nn.Identity()
    return net


def load_torchvision_weights(net: nn.Module, path: str | Path) -> None:
    """Load a torchvision ResNet state dict (the `fc.*` keys are ignored)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model.weights: {p} does not exist (weights are never downloaded)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file gets the same one-line error
        raise ValueError(f"model.weights: {p} is not a readable torch state dict ({type(e).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"model.weights: {p} does not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def build_expander(in_dim: int, hidden: int, layers: int, out_dim: int, last_bias: bool = False) -> nn.Sequential:
    """(B, in_dim) -> (B, out_dim): (layers-1) x [Linear-BN-ReLU], then a plain Linear.

    As the reference "projector" spec `hidden-hidden-out`; the last Linear has no bias
    (main_vicreg.py, Projector) unless `last_bias` (lightly's VICRegProjectionHead has one).
    """
    blocks: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        blocks += [nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        dim = hidden
    blocks.append(nn.Linear(dim, out_dim, bias=last_bias))
    return nn.Sequential(*blocks)


class VICRegModel(nn.Module):
    """encoder -> expander. `forward(x)` returns the expander output z, shape (B, out_dim)."""

    def __init__(self, encoder: nn.Module, expander: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.expander = expander
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, C, H, W) -> z (B, out_dim); with a second view y, (z_x, z_y): one call for both
        views, which DistributedDataParallel needs (one forward per backward), as the reference's
        VICReg.forward(x, y)."""
        if y is None:
            return self.expander(self.encoder(x))
        return self.expander(self.encoder(x)), self.expander(self.encoder(y))


def build_model(cfg: ModelConfig, image_size: int) -> VICRegModel:
    encoder = build_encoder(cfg, image_size)
    dim = _FEATURE_DIMS[cfg.arch]
    expander = build_expander(dim, cfg.expander_hidden, cfg.expander_layers, cfg.expander_out, cfg.expander_last_bias)
    return VICRegModel(encoder, expander, dim)
