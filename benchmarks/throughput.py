"""Pretraining images/s, side by side in one run on the same images.

  ours      : vicreg.train.pretrain (images decoded once to uint8, views made batch-wise
              on the training device), images/s of its second epoch
  standard  : the usual per-image pipeline: PIL decode of the 1024x1024 PNG + torchvision
              transforms for both views in a DataLoader, then the same model/loss/optimiser
  compute   : the same step on pre-made views (no data work at all): the ceiling

    python benchmarks/throughput.py                       # CPU: 64 and 224 px, batch 32
    python benchmarks/throughput.py --device cuda --batch 256 --sizes 224 --workers 16
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from vicreg.config import load_config
from vicreg.data.cache import cached_images
from vicreg.data.synthetic import synthetic_image
from vicreg.model import build_model
from vicreg.optim import build_optimizer
from vicreg.train import autocast_for, pretrain, train_step


def write_pngs(folder: Path, count: int) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        p = folder / f"{i + 1:03d}.png"
        Image.fromarray(synthetic_image(i % 3, 1024, rng)).save(p)
        paths.append(p)
    return paths


class PerImage(Dataset):
    """PIL decode + torchvision transforms per image and view: the common recipe."""

    def __init__(self, paths: list[Path], length: int, size: int) -> None:
        self.paths, self.length = paths, length
        kernel = max(3, 2 * math.ceil(3 * 2.0 * size / 224) + 1)

        def view(blur_p: float, sol_p: float) -> T.Compose:
            return T.Compose([
                T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(0.4, 0.4)], p=0.8),
                T.RandomApply([T.GaussianBlur(kernel, (0.1 * size / 224, 2.0 * size / 224))], p=blur_p),
                T.RandomSolarize(128, p=sol_p),
                T.ToTensor(),
                T.Normalize([0.4], [0.2]),
            ])

        self.a, self.b = view(1.0, 0.0), view(0.1, 0.2)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        with Image.open(self.paths[i % len(self.paths)]) as img:
            img = img.convert("L")
            return self.a(img), self.b(img)


def step_fn(cfg, device):
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.data.image_size).to(device, memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg.optim)
    autocast = autocast_for(device, cfg.train.precision)

    def step(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # The trainer's own step (memory format, autocast, loss), so only the data path differs.
        terms, _ = train_step(model, opt, a.to(device, non_blocking=True), b.to(device, non_blocking=True), cfg.loss,
                              autocast)
        return terms.loss.detach()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device, batches, step, warmup: int) -> float:
    """images/s over the batches after `warmup` of them."""
    n, t0 = 0, None
    for i, (a, b) in enumerate(batches):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        step(a, b)
        if i >= warmup:
            n += a.shape[0]
    sync(device)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per pipeline")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (standard)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pngs", type=int, default=64, help="distinct 1024x1024 PNGs to write")
    ap.add_argument("--small-stem", action="store_true",
                    help="the CIFAR stem (3x3/1, no max-pool) that 64 px runs get by default; off here so the "
                         "figures compare with the usual ImageNet-stem ResNet-18")
    args = ap.parse_args()
    device = torch.device(args.device)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_pngs(Path(tmp), args.pngs)
        for size in args.sizes:
            cfg = load_config(None, [
                f"data.image_size={size}", f"data.batch_size={args.batch}", "optim.name=sgd",
                "optim.lr=0.01", "optim.warmup_epochs=0", "model.expander_hidden=2048",
                "model.expander_out=2048", "train.progress=false", f"train.device={args.device}",
                "train.epochs=2", "train.patience=0", f"model.small_stem={str(args.small_stem).lower()}",
            ])
            need = args.batch * args.steps
            # ours: decode once (not timed: the cache makes it a one-off), then pretrain.
            arr, _, _, _ = cached_images("bench", paths, size, 1, Path(tmp) / "cache")
            images = torch.from_numpy(arr.copy()).repeat(math.ceil(need / len(paths)), 1, 1, 1)[:need]
            ours = pretrain(cfg, images).history[-1]["images_per_s"]

            # compute only: the same step on views made before timing.
            step = step_fn(cfg, device)
            g = torch.Generator().manual_seed(0)
            views = [(torch.randn(args.batch, 1, size, size, generator=g),) * 2
                     for _ in range(args.steps + 1)]
            if device.type == "cuda":
                views = [(a.to(device), b.to(device)) for a, b in views]
            compute = timed(device, views, step, warmup=1)

            # standard: per-image decode + transforms in a DataLoader.
            step = step_fn(cfg, device)
            loader = DataLoader(PerImage(paths, need + args.batch, size), batch_size=args.batch,
                                num_workers=args.workers, pin_memory=device.type == "cuda",
                                persistent_workers=False, drop_last=True)
            standard = timed(device, loader, step, warmup=1)
            rows.append((size, ours, standard, compute))

    threads = torch.get_num_threads()
    stem = "CIFAR stem" if args.small_stem else "ImageNet stem"
    print(f"\nResNet-18 ({stem}) + 2048-2048-2048 expander, VICReg loss, SGD, batch {args.batch}, "
          f"device {args.device}, {os.cpu_count()} CPUs ({threads} torch threads), "
          f"standard pipeline with {args.workers} DataLoader workers\n")
    print("| px | ours img/s | standard img/s | compute-only img/s | ours/compute | ours/standard |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size, ours, standard, compute in rows:
        print(f"| {size} | {ours:.1f} | {standard:.1f} | {compute:.1f} | {ours / compute:.2f} | "
              f"{ours / standard:.2f} |")


if __name__ == "__main__":
    main()
