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
import json
import time
from pathlib import Path

import numpy as np
import yaml
from learning_ablate import ablate
from learning_runs import ROOT, Bench, pm, reports, run_all, versus
from learning_timing import timing

from devtools.learning import QUICK, quick_learning
from vicreg.evaluate import EvalReport

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


# --- the suite's quick learning check (tests/test_learning.py) --------------------------------


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
    b = Bench(args.dataset, args.epochs, out)
    print(f"{b.name}: {args.epochs} epochs, {args.seeds} seeds, runs kept in {out}", flush=True)
    if args.ablate:
        ablate(b, args.seeds, args.jobs, run=not args.report, rows=args.rows)
    else:
        table(b, args.trials, args.seeds, args.jobs, args.sweep_precision)


if __name__ == "__main__":
    main()
