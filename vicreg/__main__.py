"""Command line: `python -m vicreg {pretrain,evaluate,predict,make-synthetic,check-data}`.

Each subcommand turns its arguments into explicit values and calls one plain function;
user errors (bad config, bad dataset, missing checkpoint) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from .config import Config, ConfigError, load_config, save_config
from .data import DataError


def _config(args: argparse.Namespace) -> Config:
    overrides = list(args.set or [])
    if getattr(args, "data_root", None):
        overrides.append(f"data.root={args.data_root}")
    if getattr(args, "test_root", None):
        overrides.append(f"data.test_root={args.test_root}")
    return load_config(args.config, overrides)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .data import load_datasets
    from .train import pretrain

    cfg = _config(args)
    data = load_datasets(cfg.data)
    images = data.pretrain_images(cfg.data.include_test_in_pretrain)
    print(f"pretraining on {images.shape[0]} {data.train.name} images at {cfg.data.image_size} px")
    if cfg.train.checkpoint_dir:
        save_config(cfg, Path(cfg.train.checkpoint_dir) / "config.yaml")
    result = pretrain(cfg, images)
    print(f"{result.status}: {result.reason}; best loss {result.best_loss:.4f} after "
          f"{result.epochs} epochs" + (f"; checkpoint {result.checkpoint}" if result.checkpoint else ""))
    return 0 if result.status != "diverged" else 1


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from .synthetic import make_synthetic

    task = make_synthetic(args.out, count=args.count, size=args.size, seed=args.seed)
    print(f"wrote synthetic DRAC22-format data to {task}")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from .data import check_drac22, load_cifar10

    if args.dataset == "cifar10":
        cfg = load_config(None, ["data.dataset=cifar10", f"data.root={args.data_root}"])
        d = load_cifar10(cfg.data)
        print(f"cifar10: {len(d.train.names)} training, {len(d.test.names)} test images")
        return 0
    root = args.data_root or os.environ.get("DRAC22_ROOT")
    if not root:
        raise DataError("--data-root (or DRAC22_ROOT) is required")
    files, problems = check_drac22(root, args.test_root)
    for line in files.warnings:
        print(f"warning: {line}")
    for line in problems:
        print(f"error: {line}")
    counts = [files.grades.count(g) for g in (0, 1, 2)]
    print(f"training images: {len(files.train)} (grade 0: {counts[0]}, 1: {counts[1]}, "
          f"2: {counts[2]}); test images: {len(files.test)}")
    return 1 if problems else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import run_evaluation_cli

    return run_evaluation_cli(_config(args), args.checkpoint, args.out)


def cmd_predict(args: argparse.Namespace) -> int:
    from .evaluate import run_predict_cli

    return run_predict_cli(_config(args), args.checkpoint, args.out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vicreg", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="YAML config (defaults when omitted)")
        sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable)")
        sp.add_argument("--data-root", help="dataset folder (sets data.root)")
        sp.add_argument("--test-root", help="DRAC22 test set under its own root")

    sp = sub.add_parser("pretrain", help="VICReg pretraining, one line per epoch")
    with_config(sp)
    sp.set_defaults(func=cmd_pretrain)

    sp = sub.add_parser("evaluate", help="k-fold downstream scores vs a random-init baseline")
    with_config(sp)
    sp.add_argument("--checkpoint", required=True, help="checkpoint written by pretrain")
    sp.add_argument("--out", help="folder for the report, plots and per-fold CSV")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("predict", help="DRAC22 submission CSV (case,class,P0,P1,P2)")
    with_config(sp)
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--out", required=True, help="submission CSV to write")
    sp.set_defaults(func=cmd_predict)

    sp = sub.add_parser("make-synthetic", help="write a synthetic DRAC22-format dataset")
    sp.add_argument("--out", required=True)
    sp.add_argument("--count", type=int, default=611)
    sp.add_argument("--size", type=int, default=1024)
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_make_synthetic)

    sp = sub.add_parser("check-data", help="check a dataset folder and print its counts")
    sp.add_argument("--dataset", choices=["drac22", "cifar10"], default="drac22")
    sp.add_argument("--data-root")
    sp.add_argument("--test-root")
    sp.set_defaults(func=cmd_check_data)

    args = p.parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return args.func(args)
    except (ConfigError, DataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
