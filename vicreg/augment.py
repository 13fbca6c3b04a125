"""VICReg's two asymmetric views, made batch-wise on the training device with kornia.

Recipe (the defaults of AugmentConfig): facebookresearch/vicreg augmentations.py
(RandomResizedCrop scale (0.08, 1), flip 0.5, ColorJitter(0.4, 0.4, 0.2, 0.1) p=0.8,
grayscale 0.2, Gaussian blur p=1.0 / 0.1, solarisation p=0.0 / 0.2). Each knob is a scalar
that a study can search; `jitter_strength` scales the four jitter amounts together, as
SimCLR's colour-distortion strength s (Chen et al. 2020, appendix A). kornia draws the
random parameters per sample, so a whole batch of uint8 images becomes two float views in
a handful of tensor ops on the GPU (or CPU), with no per-image Python and no DataLoader
workers.
"""

from __future__ import annotations

import math

import kornia.augmentation as K
import torch
from torch import nn

from .config import AugmentConfig


def _view(cfg: AugmentConfig, size: int, channels: int, blur_p: float, solarize_p: float) -> nn.Sequential:
    ops: list[nn.Module] = [
        K.RandomResizedCrop((size, size), scale=(cfg.crop_min_scale, cfg.crop_max_scale),
                            ratio=cfg.crop_ratio, resample="BILINEAR"),
    ]
    if cfg.flip_p > 0:
        ops.append(K.RandomHorizontalFlip(p=cfg.flip_p))
    s = cfg.jitter_strength
    if cfg.jitter_p > 0 and s > 0:
        if channels == 3:
            ops.append(K.ColorJitter(cfg.brightness * s, cfg.contrast * s, cfg.saturation * s,
                                     min(0.5, cfg.hue * s), p=cfg.jitter_p))
        else:
            # Hue and saturation have no meaning for a single grey channel.
            ops.append(K.ColorJitter(cfg.brightness * s, cfg.contrast * s, p=cfg.jitter_p))
    if channels == 3 and cfg.grayscale_p > 0:
        ops.append(K.RandomGrayscale(p=cfg.grayscale_p))
    if blur_p > 0:
        # The recipe's sigma range is in pixels of a 224 px crop; scale it so a blur
        # means the same thing at 64 px as at 224 px.
        scale = size / 224
        lo, hi = cfg.blur_sigma[0] * scale, cfg.blur_sigma[1] * scale
        kernel = max(3, 2 * math.ceil(3 * hi) + 1)
        ops.append(K.RandomGaussianBlur((kernel, kernel), (lo, hi), p=blur_p))
    if solarize_p > 0:
        # Threshold fixed at 0.5 (as PIL's solarize(128)), no brightness addition.
        ops.append(K.RandomSolarize(thresholds=(0.5, 0.5), additions=(0.0, 0.0), p=solarize_p))
    return nn.Sequential(*ops)


class TwoViews(nn.Module):
    """uint8 (B, C, H, W) on any device -> two normalised float views, each (B, C, size, size).

    `mean`/`std` (per channel, in [0, 1] units) normalise the views after augmenting.
    """

    def __init__(self, cfg: AugmentConfig, size: int, channels: int,
                 mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.view_a = _view(cfg, size, channels, cfg.blur_p_a, cfg.solarize_p_a)
        self.view_b = _view(cfg, size, channels, cfg.blur_p_b, cfg.solarize_p_b)
        self.register_buffer("mean", mean.view(1, -1, 1, 1).float())
        self.register_buffer("std", std.view(1, -1, 1, 1).float())

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.float().div_(255)
        a = (self.view_a(x).clamp_(0, 1) - self.mean) / self.std
        b = (self.view_b(x).clamp_(0, 1) - self.mean) / self.std
        return a, b


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, the same normalisation as the views, no augmentation."""
    return (x.float() / 255 - mean.view(1, -1, 1, 1).to(x.device)) / std.view(1, -1, 1, 1).to(x.device)


def channel_stats(images: torch.Tensor, max_images: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units of uint8 images (N, C, H, W), from a subset."""
    step = max(1, images.shape[0] // max_images)
    x = images[::step].float() / 255
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean, std
