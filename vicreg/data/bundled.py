"""Real image sets that ship inside installed libraries, so that the learning benchmark needs
no download and no folder: scikit-learn's digits and scikit-image's photographs cut into
texture tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig
from ..errors import DataError
from ..io import digest
from .sets import Datasets, ImageSet


def load_digits(cfg: DataConfig) -> Datasets:
    """scikit-learn's digits (UCI optdigits: 1,797 scans, 10 classes, 17 grey levels at 8x8),
    as uint8 (N, 1, size, size) upsampled bilinearly; no test set (the hold-out plays it)."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) * (255 / 16)).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=cfg.image_size, mode="bilinear", align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8).contiguous()
    labels = np.asarray(bunch.target, dtype=np.int64)
    names = [f"digit-{i:04d}" for i in range(len(labels))]
    return Datasets(ImageSet(images, labels, names, "digits", digest=digest(images),
                             source="sklearn.datasets.load_digits"), None)


TEXTURES = ("brick.png", "grass.png", "gravel.png", "moon.png", "ihc.png", "cell.png")


TEXTURE_TILE = 32


def load_textures(cfg: DataConfig) -> Datasets:
    """Real photographs that ship inside scikit-image (skimage/data, read as files: no
    download, no skimage import): three textures (brick, grass, gravel), the Moon's surface,
    an immunohistochemistry slide (ihc, made grey) and a microscopy image (cell), each cut
    into non-overlapping 32 px tiles, 256 per source (the first, in reading order); the class is
    the source. -> uint8 (1536, 1, size, size), resized from 32 px (area-averaged, or bilinear
    upwards). Neighbouring tiles of one photograph are alike, so the hold-out is easier than
    a new photograph would be; the table's comparisons all share that."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data.dataset=textures reads scikit-image's bundled photographs: pip install scikit-image "
                        "(or the bench extra: pip install -e '.[bench]')")
    folder = Path(spec.submodule_search_locations[0]) / "data"
    tiles, labels = [], []
    for label, name in enumerate(TEXTURES):
        with Image.open(folder / name) as im:
            a = np.asarray(im.convert("L"))
        t = TEXTURE_TILE
        rows, cols = a.shape[0] // t, a.shape[1] // t
        cut = a[:rows * t, :cols * t].reshape(rows, t, cols, t).transpose(0, 2, 1, 3).reshape(-1, t, t)[:256]
        tiles.append(cut)
        labels += [label] * len(cut)
    x = torch.from_numpy(np.concatenate(tiles)).unsqueeze(1)
    if cfg.image_size != TEXTURE_TILE:
        down = cfg.image_size < TEXTURE_TILE
        x = torch.nn.functional.interpolate(x.float(), size=cfg.image_size, mode="area" if down else "bilinear",
                                            align_corners=None if down else False).round().clamp(0, 255)
    images = x.to(torch.uint8).contiguous()
    names = [f"{TEXTURES[y].split('.')[0]}-{i:03d}" for i, y in enumerate(labels)]
    return Datasets(ImageSet(images, np.asarray(labels, dtype=np.int64), names, "textures", digest=digest(images),
                             source=str(folder)), None)
