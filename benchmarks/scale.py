"""How cost grows with the set: 1k to 64k images, measured in fresh processes side by side.

    python benchmarks/scale.py [--sizes 1000 4000 16000 64000] [--px 64] [--steps 12] [--epochs 10]

For each size, a folder set of synthetic RGB images (five classes of noisy blobs, made once
under data/bench-scale/, reused) is measured in fresh processes:
  cache      building the decode cache: seconds and the process's peak RSS (VmHWM)
  trial      a sweep trial's process: load, folds, the pretraining selection, pretraining on
             the default path (data.on_device auto: on the CPU, streamed from the memory map),
             the pruning probe (at most 4,000 CV images) and the final scoring (linear
             protocol). Its peak anonymous RSS (RssAnon, sampled every 20 ms: memory beyond the
             memory map's file pages, which the page cache shares between workers) is the
             memory goal's number.
  img/s      pretraining images/s of `--steps` steps (after 3 warm-up steps) on the streamed
             and on the on-device path, in the same process, alternating, best of the rounds
  eval       the probe's seconds x (epochs: one probe per epoch) + the final scoring's, against
             pretraining's `--epochs` epochs at the streamed rate: evaluation's share of a trial
Goals: peak RSS beyond the map grows < 10% from the smallest to the largest set;
streamed >= 0.9 x on-device images/s on the CPU. The model is the library's ResNet-18 with
the ImageNet stem (model.small_stem false), batch 64, so that 64k images fit a 2-core CPU's
patience; the memory and the ratio do not depend on that choice. Prints a table and JSON
(with the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path("data/bench-scale")
CLASSES = 5
GOAL_RSS, GOAL_RATIO = 0.10, 0.9


def make_set(n: int, px: int) -> Path:
    """n RGB PNGs of px x px in ROOT/n<N>-<px>px/<class>/: class k is a blob at one of five places
    over noise. Made once: a finished set has its marker file."""
    from PIL import Image

    root = ROOT / f"n{n}-{px}px"
    if (root / ".done").is_file():
        return root
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[0:px, 0:px] / px
    centres = [(0.3, 0.3), (0.7, 0.3), (0.5, 0.5), (0.3, 0.7), (0.7, 0.7)]
    for k in range(CLASSES):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k = i % CLASSES
        cy, cx = centres[k]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
        img = rng.normal(90, 30, (px, px, 3)) + 120 * blob[..., None] * rng.uniform(0.6, 1.0, 3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / f"class{k}" / f"{i:06d}.png", compress_level=1)
    (root / ".done").write_text("")
    return root


DEVICE = os.environ.get("VICREG_SCALE_DEVICE", "cpu")  # set by --device for the child processes


def _config(root: Path, px: int, cache: Path, extra: list[str] | None = None):
    from vicreg.config import load_config

    return load_config(None, [
        "data.dataset=folder", f"data.root={root}", "data.ordinal=false", f"data.image_size={px}",
        f"data.cache_dir={cache}", "data.batch_size=64", "model.in_channels=3", "model.small_stem=false",
        "train.progress=false", f"train.device={DEVICE}", "eval.epochs=10", "eval.protocol=linear", *(extra or [])])


class AnonPeak:
    """The process's peak RssAnon (kB from /proc/self/status), sampled on a thread."""

    def __init__(self) -> None:
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.02)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def _hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def child_cache(root: Path, px: int, cache: Path) -> dict:
    from vicreg.data import load_datasets

    t = time.perf_counter()
    with AnonPeak() as anon:
        data = load_datasets(_config(root, px, cache).data)
    return {"images": len(data.train.names), "cache_s": time.perf_counter() - t, "cache_peak_rss": _hwm(),
            "cache_peak_anon": anon.peak}


def _rate(cfg, images, steps: int) -> float:
    """Pretraining images/s over `steps` steps after 3 warm-up steps (a step callback stops it)."""
    import dataclasses

    from vicreg.train import pretrain

    marks: dict[int, float] = {}

    def clock(report):
        marks[report.step] = time.perf_counter()
        return "timed" if report.step == 3 + steps else None

    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, log_every_steps=1, epochs=3 + steps))
    pretrain(cfg, images, [clock])
    return steps * cfg.data.batch_size / (marks[3 + steps] - marks[3])


def child_trial(root: Path, px: int, cache: Path, steps: int, epochs: int) -> dict:
    import dataclasses

    import torch

    from vicreg.data import load_datasets, make_folds, pretrain_selection
    from vicreg.evaluate import EvalData, evaluate, probe_score

    torch.set_num_threads(os.cpu_count() or 1)
    base = AnonPeak.now()
    with AnonPeak() as anon:
        cfg = _config(root, px, cache)
        data = load_datasets(cfg.data)
        folds = make_folds(data.train.names, data.train.labels, 5, 0, holdout=0.2)
        rows, _ = pretrain_selection(data, folds, cfg.data)
        streamed = _rate(cfg, rows, steps)
        t = time.perf_counter()
        probe_score(_encoder(cfg), data.train.images, data.train.labels, folds, DEVICE, "f1", 4000)
        probe_s = time.perf_counter() - t
        t = time.perf_counter()
        evaluate(_encoder(cfg), EvalData(data.train.images, data.train.labels, folds, metric="f1"), cfg.eval, DEVICE)
        score_s = time.perf_counter() - t
    trial_anon = anon.peak
    # Side by side, alternating, best of two rounds each: the first timed run of a process also
    # pays its warm-up, whichever path it is.
    always = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, on_device="always"))
    rates: dict[str, list[float]] = {"stream": [streamed], "device": []}
    for _ in range(2):
        rates["device"].append(_rate(always, rows, steps))
        rates["stream"].append(_rate(cfg, rows, steps))
    streamed, on_device = max(rates["stream"]), max(rates["device"])
    n_pre = len(rows)
    pretrain_s = epochs * n_pre / streamed
    eval_s = epochs * probe_s + score_s
    return {"pretrain_images": n_pre, "trial_peak_anon": trial_anon, "anon_at_start": base,
            "streamed_img_s": streamed, "on_device_img_s": on_device, "probe_s": probe_s, "score_s": score_s,
            "trial_pretrain_s": pretrain_s, "trial_eval_s": eval_s, "eval_share": eval_s / (pretrain_s + eval_s)}


def _encoder(cfg):
    import torch

    from vicreg.model import build_encoder

    torch.manual_seed(0)
    return build_encoder(cfg.model, cfg.data.image_size)


def _child(kind: str, root: Path, px: int, cache: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--root", str(root), "--px", str(px), "--cache", str(cache),
           "--steps", str(args.steps), "--epochs", str(args.epochs)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "VICREG_SCALE_DEVICE": args.device}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"{kind} for {root} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000, 64000])
    ap.add_argument("--px", type=int, default=64, help="image size (64, or 224 for the slow version)")
    ap.add_argument("--steps", type=int, default=12, help="timed pretraining steps per path")
    ap.add_argument("--epochs", type=int, default=10, help="pretraining epochs of the trial the share assumes")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (the GPU check: benchmarks/gpu_check.sh)")
    ap.add_argument("--child", choices=["cache", "trial"], help=argparse.SUPPRESS)
    ap.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "cache":
        print(json.dumps(child_cache(args.root, args.px, args.cache)))
        return
    if args.child == "trial":
        print(json.dumps(child_trial(args.root, args.px, args.cache, args.steps, args.epochs)))
        return

    import torch

    gpu = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "gpu": gpu,
               "torch": torch.__version__, "python": platform.python_version(), "px": args.px,
               "date": time.strftime("%Y-%m-%d")}
    rows = []
    for n in args.sizes:
        t = time.perf_counter()
        root = make_set(n, args.px)
        made = time.perf_counter() - t
        fresh = ROOT / f"cache-n{n}-{time.time_ns()}"  # a cold build every time, removed after
        row = {"images": n, "make_s": made, **_child("cache", root, args.px, fresh, args),
               **_child("trial", root, args.px, fresh, args)}
        for f in fresh.iterdir():
            f.unlink()
        fresh.rmdir()
        rows.append(row)
        print(f"{n} images done ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)

    mb = 2**20
    print(f"\nscale: {machine['cores']} cores, torch {machine['torch']}, {args.px} px RGB, ResNet-18 (ImageNet stem), "
          f"batch 64, {gpu or 'CPU'}; {machine['date']}")
    print("| images | cache build s | cache peak RSS MB | trial peak RSS beyond the map MB | streamed img/s | "
          "on-device img/s | streamed / on-device | probe s | final scoring s | evaluation share of a "
          f"{args.epochs}-epoch trial |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['images']:,} | {r['cache_s']:.1f} | {r['cache_peak_rss'] / mb:.0f} | "
              f"{r['trial_peak_anon'] / mb:.0f} | {r['streamed_img_s']:.0f} | {r['on_device_img_s']:.0f} | "
              f"{r['streamed_img_s'] / r['on_device_img_s']:.2f} | {r['probe_s']:.1f} | {r['score_s']:.1f} | "
              f"{r['eval_share']:.0%} |")
    growth = rows[-1]["trial_peak_anon"] / rows[0]["trial_peak_anon"] - 1
    worst = min(r["streamed_img_s"] / r["on_device_img_s"] for r in rows)
    print(f"goal: trial peak RSS beyond the map grows {growth:+.1%} from {rows[0]['images']:,} to "
          f"{rows[-1]['images']:,} images (goal < {GOAL_RSS:.0%}): {'met' if growth < GOAL_RSS else 'NOT met'}")
    print(f"goal: streamed / on-device images/s at worst {worst:.2f} (goal >= {GOAL_RATIO}): "
          f"{'met' if worst >= GOAL_RATIO else 'NOT met'}")
    result = {"machine": machine, "rows": rows, "rss_growth": growth, "worst_ratio": worst}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
