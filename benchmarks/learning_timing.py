"""`python benchmarks/learning.py --timing`: pretraining wall time of ours and the peer on the
same images, ours split into views and the training step (vicreg.train.train_step)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from learning_peer import peer_pretrain
from learning_runs import Bench

from vicreg.data import load_datasets, make_folds
from vicreg.evaluate import EvalData, evaluate
from vicreg.train import pretrain


def timing(sizes: tuple[int, ...], n_images: int, epochs: int) -> None:
    """Pretraining wall time of both trainers on the same images (digits upsampled to each size),
    batch, epochs and threads, one after the other; ours in float32 and in bf16 autocast, each
    then split into views and step, and the probe of its encoder timed."""
    from vicreg.augment import TwoViews, channel_stats
    from vicreg.model import build_model
    from vicreg.optim import build_optimizer
    from vicreg.train import autocast_for, train_step

    print(f"{epochs} epochs of {n_images} digits, batch 64, {torch.get_num_threads()} threads; the peer, then ours, "
          "then ours part by part (views; forward + loss + backward + update) and the linear probe of its encoder")
    print("| px | precision | ours s | peer s | ours/peer | ours: views s | step s | rest s | probe s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        b = Bench("digits", epochs, Path("/tmp"))
        data = load_datasets(b.config({"data.image_size": size}).data)
        images, labels = data.train.images[:n_images], data.train.labels[:n_images]
        folds = make_folds(data.train.names[:n_images], labels, 5, 0)
        _, peer = peer_pretrain(b.config({"data.image_size": size}), images)
        for precision in ("fp32", "bf16"):
            cfg = b.config({"data.image_size": size, "train.precision": precision})
            t0 = time.perf_counter()
            encoder = pretrain(cfg, images).model.encoder
            ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            evaluate(encoder, EvalData(images, labels, folds), cfg.eval)
            probe = time.perf_counter() - t0
            # Ours, part by part, over the same number of steps.
            torch.manual_seed(0)
            model = build_model(cfg.model, size).to(memory_format=torch.channels_last)
            opt = build_optimizer(model, cfg.optim)
            views = TwoViews(cfg.augment, size, 1, *channel_stats(images))
            bs = cfg.data.batch_size
            per_epoch = len(images) // bs
            t_views = t_step = 0.0
            for i in range(epochs * per_epoch):
                j = i % per_epoch
                t = time.perf_counter()
                a, v = views(images[j * bs:(j + 1) * bs])
                a, v = a.contiguous(memory_format=torch.channels_last), v.contiguous(memory_format=torch.channels_last)
                t_views += time.perf_counter() - t
                t = time.perf_counter()
                train_step(model, opt, a, v, cfg.loss, autocast_for(torch.device("cpu"), precision))
                t_step += time.perf_counter() - t
            print(f"| {size} | {precision} | {ours:.1f} | {peer:.1f} | {ours / peer:.2f} | {t_views:.1f} | "
                  f"{t_step:.1f} | {ours - t_views - t_step:.1f} | {probe:.1f} |", flush=True)
