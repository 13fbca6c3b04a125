"""Frozen-encoder features: one encoder pass over the images (and one over their mirror
images), a chunk at a time, into memory or into memory maps, and per-column statistics read
the same way, so that evaluation's memory is a chunk, not the set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..augment import channel_stats, normalise
from ..data import HOLDOUT
from ..data.rows import Rows, take


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor | Rows, mean: torch.Tensor, std: torch.Tensor,
                     device: torch.device, batch_size: int = 128, flip: bool = False,
                     rows: np.ndarray | None = None) -> torch.Tensor:
    """Frozen features: uint8 (N, C, H, W), or its `rows` (M,) -> float32 (N or M, F) on the
    CPU. Reads a batch of images at a time (a memory map stays on disk)."""
    was_training = encoder.training
    encoder.eval().to(memory_format=torch.channels_last)
    cuda = device.type == "cuda"
    order = np.arange(images.shape[0]) if rows is None else np.asarray(rows)
    out = []
    for i in range(0, len(order), batch_size):
        x = normalise(take(images, order[i:i + batch_size]).to(device, non_blocking=True), mean, std)
        x = x.contiguous(memory_format=torch.channels_last)
        if flip:
            x = x.flip(-1)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out.append(encoder(x).float().cpu())
    encoder.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 0))


def cv_stats(images: torch.Tensor, folds: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and std every frozen feature is normalised with: of the CV images
    (labels unused), never the hold-out's or the test images'. See the module docstring."""
    return channel_stats(Rows.of((images, np.flatnonzero(folds != HOLDOUT))))


def column_stats(x: torch.Tensor | Rows, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and sample std (ddof 1) of (N, F), read a chunk at a time (float64 sums)."""
    n, total, squares = len(x), 0.0, 0.0
    for i in range(0, n, chunk):
        part = x[i:i + chunk].double()
        total = total + part.sum(0)
        squares = squares + (part * part).sum(0)
    mean = total / n
    var = (squares - n * mean * mean) / max(1, n - 1)
    return mean.float(), var.clamp_min(0).sqrt().float()


def features_on_disk(encoder: nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     device: torch.device, path: Path, flip: bool = False, rows: np.ndarray | None = None
                     ) -> torch.Tensor:
    """extract_features written a batch at a time into a .npy memory map at `path` -> float32
    (N, F) backed by it: the features of a large set cost disk, not memory. With `rows`, only
    those rows are extracted (the others stay 0)."""
    from numpy.lib.format import open_memmap

    order = np.arange(images.shape[0]) if rows is None else np.asarray(rows)
    first = extract_features(encoder, images, mean, std, device, flip=flip, rows=order[:1])
    out = torch.from_numpy(open_memmap(path, mode="w+", dtype=np.float32, shape=(images.shape[0], first.shape[1])))
    for i in range(0, len(order), 1024):
        part = order[i:i + 1024]
        out[torch.from_numpy(part)] = extract_features(encoder, images, mean, std, device, flip=flip, rows=part)
    return out
