"""Which untrained ResNet-18 is the honest random-init floor? The cheap probe (logistic
regression on standardised frozen features, mean CV kappa over 5 folds, hold-out excluded)
of four variants on synthetic DRAC22-format images, side by side with raw pixels:

  zero-init residuals, BN as built   the old baseline (every residual branch outputs 0)
  default init, BN as built          torchvision's resnet18() in eval mode (our random-init)
  default init, BN estimated         running statistics estimated on the images
  zero-init residuals, BN estimated

    python benchmarks/random_init_variants.py [--sizes 32 64] [--count 300] [--seeds 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vicreg.augment import channel_stats, normalise
from vicreg.config import load_config
from vicreg.data import load_datasets, make_folds
from vicreg.data.synthetic import make_synthetic
from vicreg.evaluate import probe_kappa
from vicreg.evaluate.baselines import RawPixels
from vicreg.model import build_encoder


@torch.no_grad()
def estimate_bn(encoder: nn.Module, images: torch.Tensor) -> nn.Module:
    """Running statistics as a cumulative average over one pass in train mode (no labels)."""
    mean, std = channel_stats(images)
    for m in encoder.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    encoder.train()
    for i in range(0, len(images), 128):
        encoder(normalise(images[i:i + 128], mean, std))
    return encoder.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    variants = [("zero-init, BN as built", True, False), ("default init, BN as built", False, False),
                ("default init, BN estimated", False, True), ("zero-init, BN estimated", True, True)]
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic(Path(tmp) / "d", count=args.count, size=128, seed=0, test_count=0)
        print(f"probe kappa, mean +- std over {args.seeds} encoder seeds ({args.count} synthetic images)")
        print(f"{'variant':<28}" + "".join(f"{s:>16} px" for s in args.sizes))
        rows: dict[str, list[str]] = {name: [] for name, _, _ in variants} | {"raw pixels": []}
        for size in args.sizes:
            cfg = load_config(None, ["data.dataset=synthetic", f"data.root={tmp}/d", f"data.image_size={size}",
                                     f"data.cache_dir={tmp}/cache"])
            d = load_datasets(cfg.data)
            x, y = d.train.images, d.train.labels
            folds = make_folds(d.train.names, y, 5, 0, holdout=0.2)
            for name, zero_init, bn in variants:
                ks = []
                for seed in range(args.seeds):
                    torch.manual_seed(seed)
                    enc = build_encoder(cfg.model, size, zero_init_residual=zero_init).eval()
                    ks.append(probe_kappa(estimate_bn(enc, x) if bn else enc, x, y, folds))
                rows[name].append(f"{np.mean(ks):.3f} +- {np.std(ks, ddof=1):.3f}")
            rows["raw pixels"].append(f"{probe_kappa(RawPixels(), x, y, folds):.3f}")
        for name, cells in rows.items():
            print(f"{name:<28}" + "".join(f"{c:>19}" for c in cells))


if __name__ == "__main__":
    main()
