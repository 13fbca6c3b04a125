"""VICReg's two asymmetric views, made batch-wise on the training device with kornia (or,
for comparison, per image with torchvision's transforms: `augment.views`).

Recipe (the defaults of AugmentConfig): facebookresearch/vicreg augmentations.py
(RandomResizedCrop scale (0.08, 1), flip 0.5, ColorJitter(0.4, 0.4, 0.2, 0.1) p=0.8,
grayscale 0.2, Gaussian blur p=1.0 / 0.1, solarisation p=0.0 / 0.2). Each knob is a scalar
that a study can search; `jitter_strength` scales the four jitter amounts together, as
SimCLR's colour-distortion strength s (Chen et al. 2020, appendix A). kornia draws the
random parameters per sample, so a whole batch of uint8 images becomes two float views in
a handful of tensor ops on the GPU (or CPU), with no per-image Python and no DataLoader
workers.

Crops come from whatever size the cached images have: `data.image_size` by default, or the
larger `data.crop_source_size`, in which case each crop is resized down to the output size,
area-averaged when `augment.antialias` is set (torchvision.ops.roi_align with an adaptive
sampling grid: the mean of the source pixels under each output pixel, as PIL's reduction).
"""

from __future__ import annotations

import math

import kornia.augmentation as K
import numpy as np
import torch
from torch import nn
from torchvision.ops import roi_align

from .config import AugmentConfig
from .data.rows import Rows, take


class _Crop(nn.Module):
    """kornia's RandomResizedCrop (B, C, H, W) -> (B, C, size, size); with `antialias`, the
    same random boxes (its public forward_parameters) resampled by area-averaging roi_align."""

    def __init__(self, cfg: AugmentConfig, size: int) -> None:
        super().__init__()
        self.size, self.antialias = size, cfg.antialias
        self.crop = K.RandomResizedCrop((size, size), scale=(cfg.crop_min_scale, cfg.crop_max_scale),
                                        ratio=cfg.crop_ratio, resample=cfg.resample.upper())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.antialias:
            return self.crop(x)
        src = self.crop.forward_parameters(x.shape)["src"].to(x.device, x.dtype)  # (B, 4, 2) corners, x/y
        # Corners are inclusive pixel indices; roi_align(aligned=True) takes continuous
        # coordinates where pixel i spans [i, i + 1).
        idx = torch.arange(x.shape[0], device=x.device, dtype=x.dtype)[:, None]
        boxes = torch.cat([idx, src[:, 0], src[:, 2] + 1], dim=1)  # (B, 5): index, x1, y1, x2, y2
        return roi_align(x, boxes, (self.size, self.size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def _view(cfg: AugmentConfig, size: int, channels: int, blur_p: float, solarize_p: float) -> nn.Sequential:
    ops: list[nn.Module] = [_Crop(cfg, size)]
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


def _torchvision_view(cfg: AugmentConfig, size: int, channels: int, blur_p: float, solarize_p: float):
    """The same recipe as `_view`, as torchvision v2 per-image transforms on uint8 (C, H, W)."""
    import torchvision.transforms.v2 as T

    ops: list = [T.RandomResizedCrop(size, scale=(cfg.crop_min_scale, cfg.crop_max_scale), ratio=cfg.crop_ratio,
                                     interpolation=T.InterpolationMode[cfg.resample.upper()],
                                     antialias=cfg.antialias)]
    if cfg.flip_p > 0:
        ops.append(T.RandomHorizontalFlip(cfg.flip_p))
    s = cfg.jitter_strength
    if cfg.jitter_p > 0 and s > 0:
        colour = (cfg.saturation * s, min(0.5, cfg.hue * s)) if channels == 3 else (0.0, 0.0)
        ops.append(T.RandomApply([T.ColorJitter(cfg.brightness * s, cfg.contrast * s, *colour)], p=cfg.jitter_p))
    if channels == 3 and cfg.grayscale_p > 0:
        ops.append(T.RandomGrayscale(cfg.grayscale_p))
    if blur_p > 0:
        lo, hi = cfg.blur_sigma[0] * size / 224, cfg.blur_sigma[1] * size / 224
        kernel = max(3, 2 * math.ceil(3 * hi) + 1)
        ops.append(T.RandomApply([T.GaussianBlur(kernel, (lo, hi))], p=blur_p))
    if solarize_p > 0:
        ops.append(T.RandomSolarize(128, p=solarize_p))
    return T.Compose(ops)


class TwoViews(nn.Module):
    """uint8 (B, C, H, W) on any device -> two normalised float views, each (B, C, size, size).

    `mean`/`std` (per channel, in [0, 1] units) normalise the views after augmenting, or each
    view batch's own statistics do (`augment.normalise: batch`). With `augment.views:
    torchvision` each image goes through torchvision's transforms on the CPU, one at a time.
    """

    def __init__(self, cfg: AugmentConfig, size: int, channels: int,
                 mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.per_image = cfg.views == "torchvision"
        make = _torchvision_view if self.per_image else _view
        self.view_a = make(cfg, size, channels, cfg.blur_p_a, cfg.solarize_p_a)
        self.view_b = make(cfg, size, channels, cfg.blur_p_b, cfg.solarize_p_b)
        self.batch_stats = cfg.normalise == "batch"
        self.register_buffer("mean", mean.view(1, -1, 1, 1).float())
        self.register_buffer("std", std.view(1, -1, 1, 1).float())

    def _norm(self, v: torch.Tensor) -> torch.Tensor:
        if self.batch_stats:
            return (v - v.mean(dim=(0, 2, 3), keepdim=True)) / v.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
        return (v - self.mean) / self.std

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.per_image:
            cpu = x.cpu()
            a = torch.stack([self.view_a(im) for im in cpu]).to(x.device).float().div_(255)
            b = torch.stack([self.view_b(im) for im in cpu]).to(x.device).float().div_(255)
            return self._norm(a), self._norm(b)
        x = x.float().div_(255)
        return self._norm(self.view_a(x).clamp_(0, 1)), self._norm(self.view_b(x).clamp_(0, 1))


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float, the same normalisation as the views, no augmentation."""
    return (x.float() / 255 - mean.view(1, -1, 1, 1).to(x.device)) / std.view(1, -1, 1, 1).to(x.device)


def channel_stats(images: torch.Tensor | Rows, max_images: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units of uint8 images (N, C, H, W), from an evenly
    strided subset of at most ~2 x `max_images` (a Rows reads only those rows)."""
    step = max(1, images.shape[0] // max_images)
    x = take(images, np.arange(0, images.shape[0], step)).float() / 255
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean, std
