"""Seconds for the cheap probe (frozen features of all labelled images, logistic regression
per fold, mean kappa) on 611 synthetic DRAC22-format images, at 64 and 224 px.

    python benchmarks/probe.py [--sizes 64 224]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vicreg.config import load_config
from vicreg.data import load_datasets, make_folds
from vicreg.data.synthetic import make_synthetic
from vicreg.evaluate import probe_kappa
from vicreg.model import build_encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic(Path(tmp) / "d", count=611, size=256, seed=0, test_count=0)
        for size in args.sizes:
            cfg = load_config(None, ["data.dataset=synthetic", f"data.root={tmp}/d", f"data.cache_dir={tmp}/c",
                                     f"data.image_size={size}"])
            d = load_datasets(cfg.data)
            folds = make_folds(d.train.names, d.train.labels, 5, 0)
            torch.manual_seed(0)
            enc = build_encoder(cfg.model, size)
            t = time.perf_counter()
            kappa = probe_kappa(enc, d.train.images, d.train.labels, folds)
            rows.append((size, "CIFAR 3x3/1" if size <= 64 else "ImageNet 7x7/2", time.perf_counter() - t, kappa))
    threads = torch.get_num_threads()
    print(f"\n| px | stem | probe s (611 images, 5 folds, {threads} threads) | kappa (random init) |")
    print("|---:|---|---:|---:|")
    for size, stem, s, k in rows:
        print(f"| {size} | {stem} | {s:.1f} | {k:.3f} |")


if __name__ == "__main__":
    main()
