"""Does pretraining learn on real small images? One run, side by side, on scikit-learn's digits
(1,797 real 8x8 scans of handwritten digits that ship inside scikit-learn: no download):

  ours, default recipe    our trainer with the VICReg paper's augmentations (seed 0)
  ours, swept recipe      the configuration a short sweep (experiments/digits.yaml) finds,
                          confirmed with N seeds by the sweep's own confirm stage
  peer (lightly)          lightly's VICRegLoss, VICRegProjectionHead and VICRegTransform (a
                          torchvision-transform pipeline in a DataLoader), the same ResNet-18,
                          epochs, batch, image size, optimiser and schedule (seed 0)
  untrained encoder       ResNet-18 as torchvision initialises it (the random-init baseline)
  raw pixels              the images themselves

Every encoder is scored by the same linear probe on the same folds and 20% hold-out, which
no pretraining, selection or sweep saw. Targets (printed with their outcome): our probe at
least the peer's, in at most 2/3 of its pretraining wall time; the swept recipe above the
untrained encoder on the hold-out with its 95% interval above 0 (vicreg.verdict's hold-out
verdict: a two-way bootstrap over seeds and hold-out images, BCa).

    pip install -e ".[bench]"          # lightly, the peer: a benchmark-only dependency
    python benchmarks/learning.py [--trials 8] [--epochs 10] [--seeds 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from vicreg.baselines import score_baseline
from vicreg.config import Config, config_from_dict, to_dict
from vicreg.data import load_datasets, make_folds, pretrain_selection
from vicreg.evaluate import EvalData, EvalReport, evaluate
from vicreg.optim import lr_at, warmup_steps
from vicreg.train import pretrain
from vicreg.verdict import holdout_verdict

ROOT = Path(__file__).resolve().parents[1]


def peer_pretrain(cfg: Config, images: torch.Tensor, seed: int = 0) -> tuple[torch.nn.Module, float]:
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
    backbone.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)  # the CIFAR stem, as ours at 16 px
    backbone.maxpool = torch.nn.Identity()
    backbone.fc = torch.nn.Identity()
    head = VICRegProjectionHead(512, cfg.model.expander_hidden, cfg.model.expander_out, cfg.model.expander_layers)
    model = torch.nn.Sequential(backbone, head)
    criterion = VICRegLoss()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    loader = torch.utils.data.DataLoader(Views(), batch_size=cfg.data.batch_size, shuffle=True, drop_last=True,
                                         num_workers=2, persistent_workers=True)
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


def run_sweep(study_file: Path, out: Path, trials: int, epochs: int, seeds: int) -> Path:
    """The sweep and its confirm stage, through the sweep's own command line; returns its folder."""
    from sweeps.run import main as sweep

    doc = yaml.safe_load(study_file.read_text())
    doc["base"]["train"]["epochs"] = epochs
    doc["confirm"]["seeds"] = seeds
    local = out / study_file.name  # its best file lands next to it, not in experiments/best
    local.write_text(yaml.safe_dump(doc, sort_keys=False))
    runs = out / "runs"
    code = sweep(["--config", str(local), "--no-tracking", "--out", str(runs), "--trials", str(trials)])
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


def row(name: str, reports: list[EvalReport], seconds: float | None) -> str:
    cv = [r.summary["accuracy_mean"] for r in reports]
    ho_acc = [r.summary["accuracy_holdout"] for r in reports]
    ho_kappa = [r.summary["kappa_holdout"] for r in reports]

    def pm(v: list[float]) -> str:
        return f"{np.mean(v):.3f} +- {np.std(v, ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}         "

    wall = f"{seconds:7.0f}" if seconds is not None else "      -"
    return f"| {name:<26} | {len(reports)} | {wall} | {pm(cv)} | {pm(ho_acc)} | {pm(ho_kappa)} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="learning-"))
    out.mkdir(parents=True, exist_ok=True)
    study_file = ROOT / "experiments" / "digits.yaml"
    raw = yaml.safe_load(study_file.read_text())["base"]
    raw["train"]["epochs"] = args.epochs
    raw["train"]["progress"] = False
    cfg = config_from_dict(raw, source=str(study_file))  # the default recipe: no augment keys set
    data = load_datasets(cfg.data)
    folds = make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed,
                       out / "runs" / "folds.csv", cfg.data.holdout)  # the file the sweep reuses
    images, seen = pretrain_selection(data, folds, cfg.data)
    x, y = data.train.images, data.train.labels
    print(f"digits at {cfg.data.image_size} px: {len(y)} images, {int((folds < 0).sum())} in the hold-out; "
          f"pretraining on {len(images)}; {args.epochs} epochs, batch {cfg.data.batch_size}, "
          f"{torch.get_num_threads()} threads", flush=True)

    # Side by side: the two trainers with the same recipe, epochs, batch, size and seed.
    t0 = time.perf_counter()
    ours = pretrain(cfg, images)
    ours_s = time.perf_counter() - t0
    ours_report = evaluate(ours.model.encoder, EvalData(x, y, folds), cfg.eval, "cpu", "vicreg", score_holdout=True)
    print(f"ours (default recipe): {ours_s:.0f} s", flush=True)
    peer_encoder, peer_s = peer_pretrain(cfg, images)
    peer_report = evaluate(peer_encoder, EvalData(x, y, folds), cfg.eval, "cpu", "lightly", score_holdout=True)
    print(f"peer (lightly): {peer_s:.0f} s", flush=True)

    t0 = time.perf_counter()
    runs = run_sweep(study_file, out, args.trials, args.epochs, args.seeds)
    sweep_s = time.perf_counter() - t0
    best, by_label = confirmed(runs)
    swept = by_label["vicreg"]

    print(f"\nlinear probe, digits {cfg.data.image_size} px, {args.epochs} pretraining epochs; CV = 5 folds, "
          f"hold-out = {int((folds < 0).sum())} images no selection saw")
    print("| encoder                    | seeds | pretrain s | CV accuracy | hold-out accuracy | hold-out kappa |")
    print("|---|---|---|---|---|---|")
    print(row("ours, default recipe", [ours_report], ours_s))
    print(row("ours, swept recipe", swept, None))
    print(row("peer (lightly)", [peer_report], peer_s))
    print(row("untrained encoder", by_label["random-init"], None))
    print(row("raw pixels", by_label["raw-pixels"], None))
    print(f"swept recipe (trial {best['trial']}): {best['params']}; sweep of {args.trials} trials + confirm "
          f"{args.seeds} seeds: {sweep_s:.0f} s")

    yh = swept[0].holdout_labels
    lines = []
    for name, side in (("untrained encoder", by_label["random-init"]), ("raw pixels", by_label["raw-pixels"])):
        v = holdout_verdict(yh, [r.holdout_probs for r in swept], [r.holdout_probs for r in side],
                            name, metric="accuracy")
        lines.append(v)
        print(f"swept recipe vs {v.line().split(' vs ', 1)[1]}")
    # The untrained encoder under the default recipe's own seed (the confirm stage's are 1000+).
    untrained = score_baseline("random-init", cfg, EvalData(x, y, folds), "cpu", cfg.eval.seed, score_holdout=True)
    d = holdout_verdict(yh, [ours_report.holdout_probs], [untrained.holdout_probs], "untrained encoder",
                        metric="accuracy")
    print(f"default recipe vs {d.line().split(' vs ', 1)[1]}")
    p = holdout_verdict(yh, [ours_report.holdout_probs], [peer_report.holdout_probs], "peer (lightly)",
                        metric="accuracy")
    print(f"ours (default recipe) minus peer, hold-out accuracy: {p.diff:+.3f} (95% CI {p.lo:+.3f}..{p.hi:+.3f}, "
          f"two-way bootstrap over {p.units} images x {p.seeds} seed(s), BCa)")
    ratio = ours_s / peer_s
    probe_ok = ours_report.summary["accuracy_mean"] >= peer_report.summary["accuracy_mean"]
    print(f"target 1, ours >= peer at equal epochs in <= 2/3 of its time: CV accuracy "
          f"{ours_report.summary['accuracy_mean']:.3f} vs {peer_report.summary['accuracy_mean']:.3f}, "
          f"time ratio {ratio:.2f} -> {'met' if probe_ok and ratio <= 2 / 3 else 'NOT met'}")
    print(f"target 2, swept > untrained on the hold-out, interval above 0: "
          f"{'met' if lines[0].lo > 0 else 'NOT met'} ({lines[0].diff:+.3f}, {lines[0].lo:+.3f}..{lines[0].hi:+.3f})")
    result = {"epochs": args.epochs, "trials": args.trials, "seeds": args.seeds, "ours_s": ours_s, "peer_s": peer_s,
              "sweep_s": sweep_s, "best": {k: best[k] for k in ("trial", "params")},
              "reports": {"ours-default": ours_report.to_dict(), "peer": peer_report.to_dict()},
              "verdicts": [v.as_dict() for v in (*lines, d, p)], "config": to_dict(cfg), "pretrain": seen}
    (out / "learning.json").write_text(json.dumps(result, default=float))
    print(f"results: {out / 'learning.json'}")
    if not args.out:
        shutil.rmtree(out / "runs" / "confirm", ignore_errors=True)


if __name__ == "__main__":
    main()
