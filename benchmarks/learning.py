"""Does pretraining learn on real small images, and as well as a reference implementation?
Side by side on real images that ship inside Python packages (no download):

  digits     scikit-learn's 1,797 8x8 scans of handwritten digits, upsampled to 16 px
  textures   1,536 tiles (32 px, shown at 16 px) of six photographs bundled with scikit-image:
             brick, grass, gravel, the Moon, an IHC slide, a microscopy image (vicreg.data)

Encoders, all scored by the same linear probe on the same folds and 20% hold-out that no
pretraining, selection or sweep saw:

  ours, default recipe    our trainer with the library's defaults (seeds 0..S-1)
  ours, swept recipe      what a short sweep (experiments/<set>.yaml) finds, confirmed with S
                          seeds by the sweep's own confirm stage
  peer (lightly)          lightly's VICRegLoss, VICRegProjectionHead and VICRegTransform (a
                          torchvision-transform pipeline in a DataLoader), the same ResNet-18,
                          epochs, batch, image size, optimiser and schedule (seeds 0..S-1)
  untrained encoder       ResNet-18 as torchvision initialises it (seeds 0..S-1)
  raw pixels              the images themselves

Comparisons are hold-out accuracy differences with vicreg.verdict's hold-out interval (the
two-part interval: an image jackknife and the seeds' spread, each part with its own t).

    pip install -e ".[bench]"     # lightly (the peer) and scikit-image (the textures)
    python benchmarks/learning.py [--dataset digits|textures] [--trials 8] [--epochs 10] [--seeds 3]
                                  [--jobs 2] [--sweep-precision bf16]
    python benchmarks/learning.py --ablate [--dataset ...] [--rows TEXT ...] [--report]
    python benchmarks/learning.py --timing                   # pretraining time vs the peer, 16/32/64 px

--ablate has two blocks (ABLATION): from the recipe before the defaults changed (zero-init
residuals on), one factor at a time towards lightly; then from the default, every other factor,
towards the peer or away from both. Each row has S seeds, compared with its block's base (the
same seeds) and with the peer's S seeds; --rows picks some rows (and their bases). Runs are
stored one file each under --out (default benchmarks/results/learning-<set>) and reused, so an
interrupted run goes on where it stopped; --jobs N runs N at a time (each with cores/N threads).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import yaml

from vicreg.config import Config, config_from_dict, get_key, set_key
from vicreg.data import load_datasets, make_folds, pretrain_selection
from vicreg.evaluate import EvalData, EvalReport, evaluate
from vicreg.evaluate.baselines import score_baseline
from vicreg.optim import lr_at, warmup_steps
from vicreg.train import pretrain
from vicreg.verdict import holdout_verdict

ROOT = Path(__file__).resolve().parents[1]

# One factor at a time, in two blocks, each row with the same seeds as its block's base:
# - from BEFORE, the recipe as it was before the defaults changed, each row moving one thing
#   towards lightly: what found the cause (zero-init residuals);
# - from the default (zero-init off), every other factor the issue names: whether anything
#   still matters once the cause is fixed, towards the peer or away from both ("back again":
#   per-epoch lr, drop_last off).
# Symmetric = lightly's form: both views at the mean of our two views' probabilities. bf16:
# the peer runs float32; the row says what bf16 autocast costs in learning on the CPU (where it
# is the faster precision on CPUs with native bf16: --timing).
BEFORE = {"model.zero_init_residual": True}
ABLATION: list[tuple[str, dict, dict]] = [  # (row, its change, its base), in the order they run
    ("ours, before (zero-init residuals)", {}, BEFORE),
    ("zero-init residuals off", {"model.zero_init_residual": False}, BEFORE),
    ("symmetric blur and solarisation", {"augment.blur_p_a": 0.55, "augment.blur_p_b": 0.55,
                                         "augment.solarize_p_a": 0.1, "augment.solarize_p_b": 0.1}, BEFORE),
    ("torchvision per-image views", {"augment.views": "torchvision"}, BEFORE),
    ("bf16 autocast", {"train.precision": "bf16"}, BEFORE),
    ("ours, default (zero-init off)", {}, {}),
    ("per-batch normalisation", {"augment.normalise": "batch"}, {}),
    ("expander: last Linear with bias", {"model.expander_last_bias": True}, {}),
    ("bicubic crops", {"augment.resample": "bicubic"}, {}),
    ("antialiased (area) crops", {"augment.antialias": True}, {}),
    ("crops from a 2x cache, antialiased", {"data.crop_source_size": 32, "augment.antialias": True}, {}),
    ("lr per epoch, not per step", {"optim.schedule_every": "epoch"}, {}),
    ("drop_last off", {"train.drop_last": False}, {}),
]
BASES = {name: base for name, change, base in ABLATION if not change}  # the row each block is measured from


@dataclass
class Bench:
    """One data set's recipe, images, folds and hold-out, shared by every run."""

    name: str
    epochs: int
    out: Path
    raw: dict = field(default_factory=dict)

    def config(self, overrides: dict | None = None) -> Config:
        raw = json.loads(json.dumps(self.raw))
        for key, value in (overrides or {}).items():
            set_key(raw, key, value)
        return config_from_dict(raw, source=f"experiments/{self.name}.yaml")

    def study_file(self) -> Path:
        return ROOT / "experiments" / f"{self.name}.yaml"


def make_bench(name: str, epochs: int, out: Path) -> Bench:
    raw = yaml.safe_load((ROOT / "experiments" / f"{name}.yaml").read_text())["base"]
    raw["train"]["epochs"] = epochs
    raw["train"]["progress"] = False
    return Bench(name, epochs, out, raw)


def bench_data(b: Bench, cfg: Config) -> tuple[EvalData, torch.Tensor, dict]:
    """(what the probe scores, what pretraining sees, the record of it) under `cfg`."""
    data = load_datasets(cfg.data)
    folds = make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed,
                       b.out / "runs" / "folds.csv", cfg.data.holdout)  # the file the sweep reuses
    images, seen = pretrain_selection(data, folds, cfg.data)  # small sets: one tensor for both trainers
    return EvalData(data.train.images, data.train.labels, folds), images.materialise(), seen


def peer_pretrain(cfg: Config, images: torch.Tensor, seed: int = 0, workers: int = 2) -> tuple[torch.nn.Module, float]:
    """lightly's VICReg, written as its examples do; returns (encoder, pretraining seconds)."""
    import torchvision
    from lightly.loss import VICRegLoss
    from lightly.models.modules.heads import VICRegProjectionHead
    from lightly.transforms.vicreg_transform import VICRegTransform
    from PIL import Image

    size, a = cfg.data.image_size, cfg.augment
    x = images.float() / 255
    mean, std = x.mean().item(), x.std().item()
    # The same recipe in lightly's symmetric form: its defaults are the VICReg paper's
    # (cj_strength 0.5 x (0.8, 0.8, 0.4, 0.2) = jitter (0.4, 0.4, 0.2, 0.1)), with blur and
    # solarisation at the mean of our two views' probabilities, blur sigma scaled as ours.
    transform = VICRegTransform(
        input_size=size, cj_prob=a.jitter_p, cj_strength=0.5 * a.jitter_strength, min_scale=a.crop_min_scale,
        random_gray_scale=a.grayscale_p, solarize_prob=(a.solarize_p_a + a.solarize_p_b) / 2,
        gaussian_blur=(a.blur_p_a + a.blur_p_b) / 2,
        sigmas=(a.blur_sigma[0] * size / 224, a.blur_sigma[1] * size / 224), hf_prob=a.flip_p,
        normalize={"mean": [mean], "std": [std]})
    pil = [Image.fromarray(im[0].numpy(), mode="L") for im in images]

    class Views(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(pil)

        def __getitem__(self, i: int):
            return transform(pil[i])

    torch.manual_seed(seed)
    backbone = torchvision.models.resnet18(weights=None)
    backbone.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)  # the CIFAR stem, as ours at <= 64 px
    backbone.maxpool = torch.nn.Identity()
    backbone.fc = torch.nn.Identity()
    head = VICRegProjectionHead(512, cfg.model.expander_hidden, cfg.model.expander_out, cfg.model.expander_layers)
    model = torch.nn.Sequential(backbone, head)
    criterion = VICRegLoss()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    loader = torch.utils.data.DataLoader(Views(), batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    steps = len(loader)
    total, warm = cfg.train.epochs * steps, warmup_steps(cfg.optim, cfg.train.epochs, steps)
    t0 = time.perf_counter()
    step = 0
    model.train()
    for _ in range(cfg.train.epochs):
        for v0, v1 in loader:
            for g in opt.param_groups:  # the same warm-up + cosine schedule as ours
                g["lr"] = lr_at(step, total, warm, cfg.optim.lr, cfg.optim.final_lr_ratio)
            loss = criterion(model(v0), model(v1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return backbone.eval(), time.perf_counter() - t0


# --- runs, one file each --------------------------------------------------------------


def run_one(b: Bench, kind: str, overrides: dict, seed: int) -> dict:
    """One pretraining run (kind "ours" or "peer") or floor ("untrained", "raw"), probed:
    -> {"report": EvalReport dict, "seconds": pretraining wall time or None}."""
    cfg = b.config({**overrides, "train.seed": seed})
    data, images, _ = bench_data(b, cfg)
    if kind in ("untrained", "raw"):
        r = score_baseline("random-init" if kind == "untrained" else "raw-pixels", cfg, data, "cpu", seed,
                           score_holdout=True)
        return {"report": r.to_dict(), "seconds": None}
    t0 = time.perf_counter()
    if kind == "ours":
        encoder = pretrain(cfg, images).model.encoder
        seconds = time.perf_counter() - t0
    else:
        encoder, seconds = peer_pretrain(cfg, images, seed, workers=0 if torch.get_num_threads() == 1 else 2)
    return {"report": evaluate(encoder, data, cfg.eval, "cpu", kind, score_holdout=True).to_dict(),
            "seconds": seconds}


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _job(args: tuple) -> tuple[str, dict]:
    b, kind, overrides, seed, path = args
    result = run_one(b, kind, overrides, seed)
    result |= {"kind": kind, "overrides": overrides, "seed": seed}
    Path(path).write_text(json.dumps(result, default=float))
    return path, result


def _settled(b: Bench, overrides: dict) -> str:
    """The overrides that change anything from the bench's config, as a stable string: runs of
    the same resolved recipe share one stored file (the 'before' row with zero-init off is the
    default recipe, once the default is off)."""
    base = b.config()
    return json.dumps({k: v for k, v in sorted(overrides.items()) if get_key(base, k) != v}, default=str)


def run_all(b: Bench, jobs: list[tuple[str, str, dict, int]], parallel: int,
            run: bool = True) -> dict[tuple[str, int], dict]:
    """Each (name, kind, overrides, seed) run once, stored as <out>/bench/<kind>-<digest>-seed<s>.json
    and reused by any row or table that asks for the same recipe (with `run` false, only those
    stored); -> {(name, seed): result}."""
    folder = b.out / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    bench_data(b, b.config())  # the folds file, written once before the workers read it
    stored = {}
    for path in folder.glob("*.json"):
        r = json.loads(path.read_text())
        stored[(r["kind"], _settled(b, r["overrides"]), r["seed"])] = r
    todo, done = [], {}
    for name, kind, overrides, seed in jobs:
        key = (kind, _settled(b, overrides), seed)
        if key in stored:
            done[(name, seed)] = stored[key]
        else:
            digest = hashlib.blake2b(key[1].encode(), digest_size=6).hexdigest()
            todo.append(((name, seed), (b, kind, overrides, seed, str(folder / f"{kind}-{digest}-seed{seed}.json"))))
    print(f"{len(done)} runs stored, {len(todo)} to run, {parallel} at a time", flush=True)
    if not run:
        return done
    threads = max(1, (os.cpu_count() or 1) // parallel)
    with ProcessPoolExecutor(parallel, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(_job, args): key for key, args in todo}
        failed = []
        for i, fut in enumerate(futures, 1):
            key = futures[fut]
            try:
                done[key] = fut.result()[1]
            except Exception as e:  # one broken row must not cost the others' hours
                failed.append(f"{key[0]} seed {key[1]}: {type(e).__name__}: {e}")
                print(f"[{i}/{len(todo)}] FAILED {failed[-1]}", flush=True)
                continue
            acc = done[key]["report"]["holdout"]["accuracy"]
            print(f"[{i}/{len(todo)}] {key[0]} seed {key[1]}: hold-out accuracy {acc:.3f}", flush=True)
    if failed:
        raise SystemExit(f"{len(failed)} runs failed (the others are stored): {failed[0]}")
    return done


def reports(done: dict, name: str, seeds: int) -> list[EvalReport]:
    return [EvalReport.from_dict(done[(name, s)]["report"]) for s in range(seeds)]


def pm(v: list[float]) -> str:
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def versus(mine: list[EvalReport], theirs: list[EvalReport], name: str) -> str:
    """'+0.012 (-0.004..+0.027)': the hold-out accuracy difference and its 95% interval."""
    v = holdout_verdict(mine[0].holdout_labels, [r.holdout_probs for r in mine],
                        [r.holdout_probs for r in theirs], name, metric="accuracy")
    return f"{v.diff:+.3f} ({v.lo:+.3f}..{v.hi:+.3f})"


def ablate(b: Bench, seeds: int, parallel: int, run: bool = True, rows: list[str] | None = None) -> None:
    """The ablation table; `rows`: only the rows whose name contains one of these (and the
    bases they are compared with), e.g. to check one finding on another set."""
    wanted = [(name, over, base) for name, over, base in ABLATION
              if not rows or any(r.lower() in name.lower() for r in rows) or name in BASES]
    jobs = [("peer", "peer", {}, s) for s in range(seeds)]
    jobs += [("untrained", "untrained", {}, s) for s in range(seeds)] + [("raw", "raw", {}, 0)]
    jobs += [(f"ablate {name}", "ours", {**base, **over}, s) for name, over, base in wanted for s in range(seeds)]
    done = run_all(b, jobs, parallel, run)
    peer = reports(done, "peer", seeds)
    print(f"\nablation, {b.name} {b.config().data.image_size} px, {b.epochs} epochs, {seeds} seeds per row; "
          f"linear probe, hold-out of {len(peer[0].holdout_labels)} images")
    print("| row | hold-out accuracy | CV accuracy | minus peer (95% CI) | minus its base (95% CI) |")
    print("|---|---|---|---|---|")

    def ran(name: str) -> bool:
        return all((f"ablate {name}", s) in done for s in range(seeds))

    for name, _, base in wanted:
        if not ran(name):
            print(f"| {name} | not run | | | |")
            continue
        rs = reports(done, f"ablate {name}", seeds)
        base_name = next(n for n, v in BASES.items() if v == base)
        vs_base = "base" if name == base_name else (
            versus(rs, reports(done, f"ablate {base_name}", seeds), "base") if ran(base_name) else "")
        print(f"| {name} | {pm([r.holdout['accuracy'] for r in rs])} | {pm([r.summary['accuracy_mean'] for r in rs])} "
              f"| {versus(rs, peer, 'peer')} | {vs_base} |")
    floors = [(n, k, r) for n, k, r in (("untrained encoder", "untrained", seeds), ("raw pixels", "raw", 1))
              if all((k, s) in done for s in range(r))]
    for name, rs in [("peer (lightly)", peer)] + [(n, reports(done, k, r)) for n, k, r in floors]:
        print(f"| {name} | {pm([r.holdout['accuracy'] for r in rs])} | {pm([r.summary['accuracy_mean'] for r in rs])}"
              f" | | |")


# --- the table: default, swept, peer and the floors ------------------------------------------


def run_sweep(b: Bench, trials: int, seeds: int, workers: int = 1, precision: str | None = None) -> Path:
    """The sweep (`workers` processes, the sweep's --workers) and its confirm stage, through the
    sweep's own command line (reused when its confirmed.json is there); returns its folder.
    `precision` sets train.precision for its trials and confirm runs (default: the study's)."""
    from sweeps.run import main as sweep

    runs = b.out / "runs"
    if (runs / "confirmed.json").is_file():
        return runs
    doc = yaml.safe_load(b.study_file().read_text())
    doc["base"]["train"]["epochs"] = b.epochs
    doc["confirm"]["seeds"] = seeds
    if precision:
        doc["base"]["train"]["precision"] = precision
    local = b.out / b.study_file().name  # its best file lands next to it, not in experiments/best
    local.write_text(yaml.safe_dump(doc, sort_keys=False))
    code = sweep(["--config", str(local), "--no-tracking", "--out", str(runs), "--trials", str(trials),
                  "--workers", str(workers)])
    if code != 0:
        raise SystemExit(f"the sweep failed (exit {code})")
    return runs


def confirmed(runs: Path) -> tuple[dict, dict[str, list[EvalReport]]]:
    """The best confirmed configuration and its per-seed reports by label (vicreg, baselines)."""
    best = json.loads((runs / "confirmed.json").read_text())["ranked"][0]
    by_label: dict[str, list[EvalReport]] = {}
    for path in sorted((runs / "confirm").glob(f"trial{best['trial']:04d}-seed*.json")):
        for d in json.loads(path.read_text())["reports"]:
            by_label.setdefault(d["label"], []).append(EvalReport.from_dict(d))
    return best, by_label


def table(b: Bench, trials: int, seeds: int, parallel: int, precision: str | None = None) -> None:
    """The table (default, swept, peer, floors) and its comparisons; `trials` 0: without the
    swept recipe (no sweep is run)."""
    jobs = [(name, kind, {}, s) for name, kind in (("default", "ours"), ("peer", "peer"), ("untrained", "untrained"))
            for s in range(seeds)] + [("raw", "raw", {}, 0)]
    done = run_all(b, jobs, parallel)
    t0 = time.perf_counter()
    best, by_label = confirmed(run_sweep(b, trials, seeds, parallel, precision)) if trials else ({}, {})
    sweep_s = time.perf_counter() - t0
    default, peer, untrained = (reports(done, n, seeds) for n in ("default", "peer", "untrained"))
    swept = by_label.get("vicreg", [])
    secs = {n: [done[(n, s)]["seconds"] for s in range(seeds)] for n in ("default", "peer")}
    size = b.config().data.image_size
    print(f"\n{b.name} at {size} px, {b.epochs} pretraining epochs, linear probe; CV = 5 folds, hold-out = "
          f"{len(peer[0].holdout_labels)} images no selection saw")
    print("| encoder | seeds | pretraining s | CV accuracy | hold-out accuracy | hold-out kappa |")
    print("|---|---|---|---|---|---|")
    for name, rs, s in (("ours, default recipe", default, secs["default"]), ("ours, swept recipe", swept, None),
                        ("peer (lightly)", peer, secs["peer"]), ("untrained encoder", untrained, None),
                        ("raw pixels", reports(done, "raw", 1), None)):
        if not rs:
            print(f"| {name} | not run | | | | |")
            continue
        wall = f"{np.mean(s):.0f}" if s else "-"
        print(f"| {name} | {len(rs)} | {wall} | {pm([r.summary['accuracy_mean'] for r in rs])} | "
              f"{pm([r.holdout['accuracy'] for r in rs])} | {pm([r.holdout['kappa'] for r in rs])} |")
    print("hold-out accuracy differences, 95% CI (vicreg.verdict's two-part interval over seeds and images):")
    print(f"  ours default minus peer:        {versus(default, peer, 'peer')}")
    print(f"  ours default minus untrained:   {versus(default, untrained, 'untrained')}")
    print(f"  ours default minus raw pixels:  {versus(default, reports(done, 'raw', 1) * seeds, 'raw')}")
    if not swept:
        return
    trained = yaml.safe_load((b.out / b.study_file().name).read_text())["base"]["train"].get("precision", "auto")
    print(f"swept recipe (trial {best['trial']}, train.precision {trained}): {best['params']}; "
          f"sweep of {trials} trials + confirm {seeds} seeds: {sweep_s:.0f} s (0 when reused)")
    print(f"  ours swept minus untrained:     {versus(swept, by_label['random-init'], 'untrained')} "
          f"(the confirm stage's own untrained encoders, the same seeds)")
    print(f"  ours swept minus raw pixels:    {versus(swept, by_label['raw-pixels'], 'raw')}")
    print(f"  ours swept minus peer:          {versus(swept, peer, 'peer')} (other seeds: unpaired)")
    print(f"  ours swept minus ours default:  {versus(swept, default, 'default')} (other seeds: unpaired)")


# --- time: ours against the peer, and where ours goes ----------------------------------------


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
        b = make_bench("digits", epochs, Path("/tmp"))
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


# --- the suite's quick learning check (tests/test_learning.py) --------------------------------

# A few epochs on the bundled textures at 8 px (a quarter of the 16 px compute), probed on 2 CV
# folds (no hold-out: nothing is selected): small enough for a test on 2 cores.
QUICK = {"data.dataset": "textures", "data.image_size": 8, "data.folds": 2, "data.holdout": 0.0,
         "train.epochs": 3, "eval.epochs": 20}


def quick_learning(seed: int, epochs: int | None = None) -> tuple[float, float]:
    """(pretrained, untrained) CV accuracy of the linear probe under QUICK, with `seed` for the
    pretraining and the untrained encoder alike."""
    b = make_bench("textures", QUICK["train.epochs"], Path("."))
    cfg = b.config({**QUICK, "train.seed": seed, **({"train.epochs": epochs} if epochs else {})})
    data = load_datasets(cfg.data)
    folds = make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed)
    ev = EvalData(data.train.images, data.train.labels, folds)
    encoder = pretrain(cfg, data.train.images).model.encoder
    mine = evaluate(encoder, ev, cfg.eval, "cpu", "vicreg").summary["accuracy_mean"]
    floor = score_baseline("random-init", cfg, ev, "cpu", seed).summary["accuracy_mean"]
    return mine, floor


def quick_margin(seeds: int, epochs: int | None = None) -> None:
    """The quick check's numbers over `seeds` seeds, and the margin the test asserts: the mean
    gain less three standard deviations of it (a regression by more than that fails the test;
    a seed of the unchanged code falls below it about once in 700)."""
    t0 = time.perf_counter()
    runs = [quick_learning(s, epochs) for s in range(seeds)]
    gain = np.array([m - f for m, f in runs])
    print(f"quick check ({QUICK}), {seeds} seeds, {(time.perf_counter() - t0) / seeds:.0f} s per seed:")
    for s, (m, f) in enumerate(runs):
        print(f"  seed {s}: pretrained {m:.3f}, untrained {f:.3f}, gain {m - f:+.3f}")
    print(f"gain {gain.mean():+.4f} ± {gain.std(ddof=1):.4f} (sd over seeds); margin = mean - 3 sd = "
          f"{gain.mean() - 3 * gain.std(ddof=1):+.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=("digits", "textures"), default="digits")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1, help="runs (or sweep workers) at once, cores/jobs threads each")
    ap.add_argument("--out", help="where the runs are kept and reused (default benchmarks/results/learning-<set>)")
    ap.add_argument("--sweep-precision", choices=("auto", "fp32", "bf16"),
                    help="train.precision of the sweep's trials and confirm runs (default: the study's; bf16 "
                         "is the faster on a CPU with native bf16, at no measured cost: the ablation's bf16 row)")
    ap.add_argument("--ablate", action="store_true", help="the one-factor-at-a-time table")
    ap.add_argument("--rows", nargs="+", metavar="TEXT",
                    help="with --ablate: only the rows whose name contains TEXT (and their bases)")
    ap.add_argument("--report", action="store_true", help="with --ablate: the table of the stored runs only")
    ap.add_argument("--timing", action="store_true", help="pretraining time against the peer at 16/32/64 px")
    ap.add_argument("--timing-images", type=int, default=512)
    ap.add_argument("--quick", type=int, metavar="SEEDS", help="the quick learning check's spread over SEEDS seeds")
    args = ap.parse_args()
    if args.quick:
        quick_margin(args.quick)
        return
    if args.timing:
        timing((16, 32, 64), args.timing_images, 2)
        return
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"learning-{args.dataset}")
    out.mkdir(parents=True, exist_ok=True)
    b = make_bench(args.dataset, args.epochs, out)
    print(f"{b.name}: {args.epochs} epochs, {args.seeds} seeds, runs kept in {out}", flush=True)
    if args.ablate:
        ablate(b, args.seeds, args.jobs, run=not args.report, rows=args.rows)
    else:
        table(b, args.trials, args.seeds, args.jobs, args.sweep_precision)


if __name__ == "__main__":
    main()
