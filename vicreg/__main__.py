"""Command line: `vicreg {pretrain,evaluate,predict,make-synthetic,check-data,convert-checkpoint}`
(installed by pip; `python -m vicreg` is the same command).

Each subcommand turns its arguments into explicit values and calls one plain function;
user errors (bad config, bad dataset, missing checkpoint) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
import warnings
from pathlib import Path

import yaml

from .config import (
    Config,
    ConfigError,
    config_from_dict,
    load_config,
    parse_overrides,
    primary_metric,
    save_config,
    set_key,
)
from .errors import CheckpointError, DataError
from .io import atomic_write


def _config(args: argparse.Namespace, base: dict | None = None) -> Config:
    """--config (or else `base`, e.g. a checkpoint's stored config), then --set overrides."""
    overrides = list(args.set or [])
    if getattr(args, "data_root", None):
        overrides.append(f"data.root={args.data_root}")
    if getattr(args, "test_root", None):
        overrides.append(f"data.test_root={args.test_root}")
    if args.config or base is None:
        return load_config(args.config, overrides)
    raw = copy.deepcopy(base)
    # The paths this command writes come from the defaults and the command line, never from the
    # file: a checkpoint is data, and must not choose where the decode cache or folds file go.
    defaults = Config()
    for key, value in (("data.cache_dir", defaults.data.cache_dir), ("data.folds_file", defaults.data.folds_file),
                       ("train.checkpoint_dir", None)):
        set_key(raw, key, value)
    for key, value in parse_overrides(overrides):
        set_key(raw, key, value)
    return config_from_dict(raw, source=args.checkpoint)


def _labelled_folds(cfg: Config, out: str | None):
    """The dataset and its splits (stored at data.folds_file, or `out`/folds.csv when given)."""
    from .data import load_datasets, make_folds
    from .data.synthetic import ensure_synthetic

    ensure_synthetic(cfg.data)
    data = load_datasets(cfg.data, cfg.model.in_channels)
    folds_path = cfg.data.folds_file or (str(Path(out) / "folds.csv") if out else None)
    folds = make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed, folds_path,
                       cfg.data.holdout)
    return data, folds


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Under torchrun every process runs this: rank 0 checks the data and writes the folds file
    first (the others read what it made), rank 0 alone prints and writes (vicreg/distributed.py)."""
    from .data import pretrain_selection
    from .distributed import broadcast, setup
    from .seen import describe_pretrain
    from .train import pretrain, resolve_device

    cfg = _config(args)
    world, _ = setup(resolve_device(cfg.train.device))
    failed = None
    if world.main:
        try:
            data, folds = _labelled_folds(cfg, cfg.train.checkpoint_dir)
        except Exception as e:
            failed = e
    if broadcast(failed is not None, world):
        if failed is not None:
            raise failed  # rank 0's one-line error (main)
        return 2  # the other ranks stop with it, silently
    if not world.main:
        data, folds = _labelled_folds(cfg, cfg.train.checkpoint_dir)
    images, seen = pretrain_selection(data, folds, cfg.data)
    if world.main:
        print(f"pretraining on {images.shape[0]} {data.train.name} images at {cfg.data.image_size} px "
              f"({describe_pretrain(seen)})" + (f" on {world.size} processes" if world.active else ""))
        if cfg.train.checkpoint_dir:
            save_config(cfg, Path(cfg.train.checkpoint_dir) / "config.yaml")
    result = pretrain(cfg, images)
    if world.main:
        print(f"{result.status}: {result.reason}; best loss {result.best_loss:.4f} after "
              f"{result.epochs} epochs" + (f"; checkpoint {result.checkpoint}" if result.checkpoint else ""))
    if world.active:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0 if result.status != "diverged" else 1


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from .data.synthetic import make_synthetic

    if args.count < 1 or args.size < 8 or args.seed < 0:
        raise ConfigError(f"make-synthetic: --count must be >= 1, --size >= 8 and --seed >= 0 (got {args.count}, "
                          f"{args.size}, {args.seed})")
    task = make_synthetic(args.out, count=args.count, size=args.size, seed=args.seed)
    print(f"wrote synthetic DRAC22-format data to {task}")
    return 0


def cmd_check_data(args: argparse.Namespace) -> int:
    from .data.cifar10 import load_cifar10
    from .data.drac22 import check_drac22

    if args.config:  # a folder or CSV set described by its config (data.dataset folder / csv)
        return _check_own(_config(args))
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


def _check_own(cfg: Config) -> int:
    """check-data for a folder or CSV set: every problem one line, then the counts per class."""
    from .data.own import check

    if cfg.data.dataset not in ("folder", "csv"):
        raise ConfigError(f"check-data --config is for data.dataset folder or csv (this config says "
                          f"{cfg.data.dataset}; use --dataset)")
    files, problems = check(cfg.data)
    for line in files.warnings:
        print(f"warning: {line}")
    for line in problems:
        print(f"error: {line}")
    counts = ", ".join(f"{c}: {files.labels.count(i)}" for i, c in enumerate(files.classes))
    print(f"labelled images: {len(files.train)} ({counts}); unlabelled: {len(files.unlabelled)}; "
          f"test: {len(files.test)}")
    return 1 if problems else 0


def _check_first(args: argparse.Namespace) -> None:
    """User errors before torch is even imported: a bad config file, a missing checkpoint."""
    if args.config:
        _config(args)
    if not Path(args.checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")


def cmd_evaluate(args: argparse.Namespace) -> int:
    _check_first(args)
    from .checkpoint import load_encoder_checkpoint
    from .data import HOLDOUT, pretrain_selection
    from .evaluate import EvalData, evaluate, scores_csv
    from .evaluate.baselines import score_baselines
    from .plots import save_report_plots
    from .seen import describe_pretrain, pretrain_note
    from .train import resolve_device
    from .verdict import CV_WHERE, cv_verdicts, holdout_score, holdout_verdicts, primary

    raw, encoder = load_encoder_checkpoint(args.checkpoint)
    cfg = _config(args, base=raw)
    data, folds = _labelled_folds(cfg, args.out)
    _, seen = pretrain_selection(data, folds, cfg.data)
    device = resolve_device(cfg.train.device)
    x, y = data.train.images, data.train.labels
    metric = primary_metric(cfg.data)
    scored = EvalData(x, y, folds, metric=metric)
    reports = [evaluate(encoder, scored, cfg.eval, device, "vicreg", score_holdout=True)]
    cache = Path(args.out) / "baselines" if args.out else None
    reports += score_baselines(cfg, scored, device, cfg.eval.seed, True, cache)
    n_hold = int((folds == HOLDOUT).sum())
    print(f"{int((folds != HOLDOUT).sum())} labelled images in {cfg.data.folds} CV folds, {n_hold} in the hold-out; "
          f"{describe_pretrain(seen)}\n")
    for r in reports:
        print(r.table() + "\n")
    baselines = {r.label: [r] for r in reports[1:]}
    hold = holdout_verdicts(reports[:1], baselines, metric=metric)
    for v in [*hold, *cv_verdicts(reports[:1], baselines, CV_WHERE, metric)]:
        print(v.line())
    print(f"({pretrain_note(seen)})")
    if (head := primary(hold)) is not None:
        print(head["line"])
    if (quote := holdout_score(reports[:1], metric)) is not None:
        print(f"quote: {quote['text']}, this checkpoint")
    if args.out:
        for r in reports:
            save_report_plots(r, args.out, metric, data.train.classes)
        atomic_write(Path(args.out) / "folds_scores.csv", scores_csv(reports))
        print(f"plots and per-fold scores in {args.out}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    _check_first(args)
    from .checkpoint import load_encoder_checkpoint
    from .evaluate.predict import describe, predict

    raw, encoder = load_encoder_checkpoint(args.checkpoint)
    cfg = _config(args, base=raw)
    report = predict(encoder, cfg, args.out)
    print(describe(report, args.out, len(report.test_probs), primary_metric(cfg.data)))
    return 0


def cmd_convert_checkpoint(args: argparse.Namespace) -> int:
    from .checkpoint import CONVERT, convert

    if not args.trust:
        raise ConfigError(f"{args.file}: converting rebuilds the Python objects the file names, which runs their "
                          f"code: pass --trust if you trust who wrote it ({CONVERT} {args.file})")
    backup, names = convert(args.file)
    print(f"{args.file}: rewritten as plain data (weights only); it had named {', '.join(names) or 'nothing unsafe'}; "
          f"the original is {backup}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vicreg", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", help="YAML config, or a study file (its base) (default: the checkpoint's own, "
                        "or the defaults)")
        sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override one config value (repeatable)")
        sp.add_argument("--data-root", help="dataset folder (sets data.root)")
        sp.add_argument("--test-root", help="DRAC22 test set under its own root")

    sp = sub.add_parser("pretrain", help="VICReg pretraining, one line per epoch")
    with_config(sp)
    sp.set_defaults(func=cmd_pretrain)

    sp = sub.add_parser("evaluate", help="k-fold and hold-out scores against the baselines, with a verdict")
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

    sp = sub.add_parser("convert-checkpoint", help="rewrite a trusted older checkpoint as weights only")
    sp.add_argument("file")
    sp.add_argument("--trust", action="store_true",
                    help="you trust the file: converting rebuilds the objects it names, which runs their code")
    sp.set_defaults(func=cmd_convert_checkpoint)

    sp = sub.add_parser("check-data", help="check a dataset folder and print its counts")
    sp.add_argument("--dataset", choices=["drac22", "cifar10"], default="drac22")
    sp.add_argument("--config", help="a config or study file whose data section describes a folder/csv set")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    sp.add_argument("--data-root")
    sp.add_argument("--test-root")
    sp.set_defaults(func=cmd_check_data)

    args = p.parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return args.func(args)
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (UnicodeDecodeError, csv.Error, yaml.YAMLError, ValueError, OSError) as e:  # faults of what was read
        print(f"error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:400]


if __name__ == "__main__":
    sys.exit(main())
