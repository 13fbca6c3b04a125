"""One typed config tree for a run, loaded from YAML with unknown keys rejected.

The tree is plain dataclasses: ``Config(data, model, augment, loss, optim, train, eval)``.
``load_config(path, overrides)`` reads a YAML file, applies ``section.key=value``
overrides and checks every key and type, so a typo fails in a second with a line
naming the file and the key instead of after an hour of training.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .io import atomic_write


class ConfigError(ValueError):
    """A bad config file or override; the message is one line naming the key."""


class DataError(ValueError):
    """A bad dataset; the message is one line naming the path and the problem. (Here, beside
    ConfigError, so that the sweep's command line can catch it without importing torch.)"""


class CheckpointError(ValueError):
    """A weights file that cannot be used, in one line naming the file and what is wrong
    (vicreg/checkpoint.py)."""


class UnsafeCheckpoint(CheckpointError):
    """A file that only full unpickling (which can run code) would read."""


# The allowed names, declared once: the fields below use them and the loader checks them.
Dataset = Literal["synthetic", "drac22", "cifar10", "digits", "textures", "folder", "csv"]
Arch = Literal["resnet18", "resnet34", "resnet50"]
Init = Literal["random", "imagenet", "auto"]
Optimizer = Literal["lars", "sgd", "adam", "adamw"]
Protocol = Literal["linear", "head", "conv+head", "full"]
Views = Literal["kornia", "torchvision"]
Resample = Literal["bilinear", "bicubic"]
Normalise = Literal["dataset", "batch"]
ScheduleEvery = Literal["step", "epoch"]
Precision = Literal["auto", "fp32", "bf16"]
OnDevice = Literal["auto", "always", "never"]


def names(kind: Any) -> tuple[str, ...]:
    """The allowed values of a Literal type: names(Protocol) -> ('linear', 'head', ...)."""
    return typing.get_args(kind)


@dataclass
class DataConfig:
    # digits: scikit-learn's 1,797 scanned handwritten digits; textures: 1,536 tiles of six
    # photographs bundled with scikit-image (textures, the Moon, microscopy)
    dataset: Dataset = "synthetic"
    root: str | None = None  # dataset folder (drac22/synthetic: the DRAC22 layout root)
    test_root: str | None = None  # DRAC22 test set under its own root, if not under `root`
    # Your own images (dataset folder: root/<class>/<image>; csv: a labels file naming them;
    # vicreg/layouts.py). Paths are relative to `root` unless absolute.
    classes: tuple[str, ...] | None = None  # class order; default: sorted folder names / label values
    ordinal: bool | None = None  # graded labels (quadratic kappa) or not; null: true for drac22 only
    unlabelled: str | None = None  # a folder of images only pretraining sees
    test: str | None = None  # a folder of the images that predict scores
    labels: str | None = None  # csv: the labels file
    images: str | None = None  # csv: the folder the CSV's image names are in (default: root)
    image_column: str = "image"  # csv: matched case-insensitively
    label_column: str = "label"  # csv: the labels' column, matched case-insensitively
    split_column: str | None = None  # csv: rows whose value here is "test" are unlabelled test images
    image_size: int = 64  # images are resized once to this and cached as uint8
    # Crop the views from a cache at this larger size, as the reference crops full-resolution
    # images (null: from the image_size cache); no measured gain on small images, (size ratio)^2
    # the cache memory: the first knob on large images (ablation: docs/benchmarks.md).
    crop_source_size: int | None = None
    batch_size: int = 32  # pretraining's batch: VICReg's variance and covariance are over it
    include_test_in_pretrain: bool = False  # SSL uses no labels: the test images may join
    cache_dir: str = "data/.cache"  # the decode cache (uint8 .npy memory maps): a fast local disk
    # Pretraining's images on the training device whole (always), streamed a batch ahead from
    # the memory-mapped cache (never), or on the device when they fit (auto: in
    # device_budget_mb, else half of the GPU memory one worker may use; the CPU streams).
    on_device: OnDevice = "auto"
    device_budget_mb: float | None = None  # auto's limit in MiB; null: half the device memory per worker
    skip_bad_images: bool = False  # undecodable images become a warning instead of an error
    folds: int = 5  # stratified k of the CV folds every trial is scored on
    fold_seed: int = 0  # seeds the hold-out and the folds (stored in folds.csv and reused)
    folds_file: str | None = None  # CSV of the image->fold assignment, reused when present
    # A stratified part of the labelled set that no selection sees (epochs, pruning, TPE,
    # ranking): scored only for confirmed configurations. 0 disables it.
    holdout: float = 0.2
    holdout_in_pretrain: bool = False  # may pretraining (which uses no labels) see those images?
    shuffle_labels: bool = False  # the null test: labels permuted (fold_seed), so scores must be ~0
    # Only for dataset=synthetic when `root` does not exist yet: what to generate there.
    synthetic_count: int = 611
    synthetic_size: int = 256  # its images' side in pixels
    synthetic_seed: int = 0  # its generator's seed


@dataclass
class ModelConfig:
    arch: Arch = "resnet18"  # torchvision's ResNet; 18 suits hundreds of images
    # Where the encoder starts: random (torchvision's init), imagenet (a local torchvision
    # weights file, else an error) or auto (imagenet when a file is found, else random).
    # The file: `weights`, else $VICREG_IMAGENET_WEIGHTS, else torch's hub cache
    # ($TORCH_HOME/hub/checkpoints/<the architecture's standard file>). Never downloaded.
    init: Init = "random"
    weights: str | None = None  # local torchvision state-dict file (for init imagenet/auto)
    # 3x3 stride-1 stem, no max-pool; None: auto (<= 64 px and no `weights`)
    small_stem: bool | None = None
    # 1 (grey) or 3 (RGB); null: the data's (3 when any image is in colour), pinned in the
    # resolved config. Grey images given to a 3-channel model are repeated; colour ones made grey.
    in_channels: int | None = None
    # Zero-init of each residual branch's last BN (Goyal et al. 2017; the reference's). Off: on
    # short runs it left the branches untrained, and off alone closed the gap to lightly (the
    # ablation, docs/benchmarks.md); the random-init baseline is built the same way.
    zero_init_residual: bool = False
    expander_hidden: int = 2048  # the expander MLP's width (the reference: 8192 on ImageNet)
    expander_layers: int = 3  # number of Linear layers in the expander
    expander_out: int = 2048  # the embedding the loss sees (its covariance is expander_out^2)
    # The expander's last Linear with a bias (lightly's) or without (the reference's); no
    # measurable difference (ablation, docs/benchmarks.md): kept off.
    expander_last_bias: bool = False


@dataclass
class AugmentConfig:
    """Strengths and probabilities of the VICReg recipe (defaults: facebookresearch/vicreg
    augmentations.py). Every knob is one scalar, so a study can search each of them (`_a`/`_b`
    are the two asymmetric views); 0 (or crop_min_scale 1) turns a transform off.

    The defaults below the recipe (views, resample, antialias, normalise) are kept as they
    were: the learning ablation (docs/benchmarks.md) found no gap they explain."""

    crop_min_scale: float = 0.08  # RandomResizedCrop area in [crop_min_scale, crop_max_scale]
    crop_max_scale: float = 1.0  # the crop's largest area fraction (the recipe: the whole image)
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)  # the crop's aspect-ratio range (the recipe's)
    flip_p: float = 0.5  # horizontal flip probability
    jitter_p: float = 0.8  # colour-jitter probability
    jitter_strength: float = 1.0  # multiplies brightness, contrast, saturation and hue
    brightness: float = 0.4  # jitter range, x jitter_strength
    contrast: float = 0.4  # jitter range, x jitter_strength
    saturation: float = 0.2  # ignored for 1-channel images
    hue: float = 0.1  # ignored for 1-channel images
    grayscale_p: float = 0.2  # ignored for 1-channel images
    # Asymmetric blur and solarisation, view a / view b (the reference's; lightly's symmetric
    # form was no better in the ablation, docs/benchmarks.md).
    blur_p_a: float = 1.0
    blur_p_b: float = 0.1  # view b's blur probability
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # in pixels of a 224 px crop
    solarize_p_a: float = 0.0  # view a's solarisation probability
    solarize_p_b: float = 0.2  # view b's solarisation probability
    # How the views are made: kornia, batch-wise on the training device (default), or
    # torchvision's per-image transforms on the CPU, as a DataLoader would; the same recipe, no
    # measurable difference (ablation, docs/benchmarks.md).
    views: Views = "kornia"
    # The crop's interpolation; bicubic was no better (ablation, docs/benchmarks.md).
    resample: Resample = "bilinear"
    # Area-average when a crop is shrunk (torchvision/PIL do; kornia's crop does not): matters
    # only with data.crop_source_size; no measured difference otherwise (docs/benchmarks.md).
    antialias: bool = False
    # Normalise the views by the pretraining set's per-channel statistics (as lightly) or by
    # each view batch's own; no measured difference (docs/benchmarks.md).
    normalise: Normalise = "dataset"


@dataclass
class LossConfig:
    """The weights of VICReg's three terms (Bardes et al., ICLR 2022; the reference's defaults)."""

    sim_coeff: float = 25.0  # invariance: the two views' embeddings agree
    std_coeff: float = 25.0  # variance: each dimension keeps a standard deviation of 1
    cov_coeff: float = 1.0  # covariance: dimensions decorrelate


@dataclass
class OptimConfig:
    """LARS defaults are facebookresearch/vicreg's, whole: base lr 0.2 scaled by batch/256,
    trust coefficient 0.001, weight decay 1e-6 (main_vicreg.py)."""

    name: Optimizer = "lars"  # the reference's; adam suits small sets and batches
    lr: float = 0.2  # the peak (LARS: base lr, x batch/256)
    weight_decay: float = 1e-6  # L2 through the optimiser (LARS excludes biases and norms)
    momentum: float = 0.9  # sgd and lars
    eta: float = 0.001  # LARS trust coefficient
    betas: tuple[float, float] = (0.9, 0.999)  # adam and adamw
    scale_lr_by_batch: bool | None = None  # peak lr = lr * batch_size / 256; None: true for lars only
    warmup_epochs: float = 10.0  # linear warm-up from 0 to the peak lr
    # When set, the warm-up is this fraction of train.epochs instead (so a study can search
    # train.epochs and keep the warm-up in proportion).
    warmup_fraction: float | None = None
    final_lr_ratio: float = 0.001  # cosine decays to peak * this
    # The lr moves every step (the reference's and lightly's) or every epoch; per epoch was
    # worse in the ablation (docs/benchmarks.md).
    schedule_every: ScheduleEvery = "step"


@dataclass
class TrainConfig:
    epochs: int = 100  # the cosine schedule spans them
    # Early stopping on the epoch's mean VICReg loss; 0 (default) disables. The cosine schedule
    # spans train.epochs, so a run stopped early is scored at a near-peak learning rate.
    patience: int = 0
    min_delta: float = 0.0  # early stopping's least improvement of the loss
    seed: int = 0  # the model's init, batches and views (a resumed run draws the same)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False  # torch.compile the model (CUDA only)
    # The forward passes' precision: bf16 autocast or float32 (the loss is float32 either way).
    # auto: bf16 on CUDA, float32 on the CPU (bf16 learns as well but is emulated, so slower,
    # on CPUs without it: docs/benchmarks.md).
    precision: Precision = "auto"
    log_every_steps: int = 0  # also report every N steps (0: per epoch only)
    checkpoint_dir: str | None = None  # a checkpoint per epoch; resumed from when present
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch is always written)
    # Drop each epoch's last partial batch: VICReg's variance and covariance are batch
    # statistics (when false it is trained on unless it holds a single image).
    drop_last: bool = True
    progress: bool = True  # a progress bar on a terminal, and one line per epoch


@dataclass
class EvalConfig:
    protocol: Protocol = "linear"  # linear probe; head, conv+head, full: see docs/training.md
    epochs: int = 30  # the head's (or fine-tuning's) epochs on each fold
    lr: float = 1e-3  # the head's AdamW learning rate
    weight_decay: float = 1e-4  # the head's AdamW weight decay
    dropout: float = 0.5  # the MLP head's dropout (head, conv+head, full)
    head_hidden: int = 256  # the MLP head's width
    # 0: the head trains exactly `epochs` and the last epoch is scored. N > 0: early stopping
    # with patience N on an inner split of the training fold (`inner_val`), never on the
    # fold being scored, which would inflate the score (Cawley & Talbot, JMLR 2010).
    patience: int = 0
    inner_val: float = 0.2  # the inner split's fraction of each training fold (with patience)
    batch_size: int = 32  # the head's batch
    oversample: bool = True  # class-balanced sampling of the minority grades
    augment: bool = True  # light flips and crops while training the head
    lr_decay: float = 0.5  # `full`: each earlier stage gets lr * lr_decay**depth
    unfreeze_every: int = 2  # `full`: one more stage is unfrozen every N epochs
    baselines: bool = True  # also score random-init and raw pixels (and ImageNet, if given)
    imagenet_weights: str | None = None  # local torchvision ResNet weights for that baseline
    seed: int = 0  # the head's init and batches (each fold: seed x 1000 + fold)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Keys of earlier versions, for a pointed error instead of "unknown key".
RENAMED = {"augment.crop_scale": "augment.crop_min_scale and augment.crop_max_scale",
           "augment.blur_p": "augment.blur_p_a and augment.blur_p_b",
           "augment.solarize_p": "augment.solarize_p_a and augment.solarize_p_b",
           "eval.probe_every": "the study key probe_every (a sweep's probe for pruning)"}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            listed = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"
            raise ConfigError(f"{where}={value!r} must be {listed}")
        return value
    if origin is tuple and typing.get_args(tp)[-1] is Ellipsis:  # tuple[str, ...]: any length
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(tp)[0]
        # Class names may be written as numbers (classes: [0, 1, 2]): they name the labels' text.
        return tuple(_coerce(str(v) if item is str and isinstance(v, int) and not isinstance(v, bool) else v,
                             item, where) for v in value)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML reads `1e-3` (no dot) as a string; accept any float literal.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is Any:
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        if key in RENAMED:
            raise ConfigError(f"'{key}' is now {RENAMED[key]} (one scalar each, so that a study can search them)")
        raise ConfigError(f"unknown key '{key}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in raw.items():
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


def load_dataclass(cls: type, raw: dict[str, Any] | None, source: str) -> Any:
    """`cls` (a dataclass tree) from a nested dict with every key and type checked, as for the
    Config tree; errors are one line prefixed with `source` (used for study files too)."""
    try:
        return _build(cls, raw or {}, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


# Channels of the data sets whose images are all alike; folder and csv sets are looked at
# (vicreg.layouts.resolve_channels, which resolve_init calls before a run).
FIXED_CHANNELS = {"synthetic": 1, "drac22": 1, "digits": 1, "textures": 1, "cifar10": 3}


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a checked Config from a nested dict; errors are prefixed with `source`."""
    try:
        cfg = _build(Config, raw or {}, "")
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    if cfg.model.in_channels is None and cfg.data.dataset in FIXED_CHANNELS:
        cfg.model.in_channels = FIXED_CHANNELS[cfg.data.dataset]
    return cfg


def is_ordinal(cfg: DataConfig) -> bool:
    """Are the labels graded (quadratic kappa the primary score) or unordered classes?"""
    return cfg.ordinal if cfg.ordinal is not None else cfg.dataset in ("drac22", "synthetic")


def primary_metric(cfg: DataConfig) -> str:
    """The score everything ranks, prunes and judges by: quadratic kappa for graded labels,
    macro-F1 for unordered classes (kappa would count a confusion of classes 0 and 4 as
    worse than one of 0 and 1, an order they do not have)."""
    return "kappa" if is_ordinal(cfg) else "f1"


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express."""
    checks = [
        (cfg.data.image_size >= 8, "data.image_size", "must be >= 8"),
        (cfg.data.batch_size >= 2, "data.batch_size", "must be >= 2 (VICReg needs a batch)"),
        (cfg.data.folds >= 2, "data.folds", "must be >= 2"),
        (cfg.data.device_budget_mb is None or cfg.data.device_budget_mb >= 0, "data.device_budget_mb",
         "must be a number of MiB >= 0, or null (half the device memory one worker may use)"),
        (0 <= cfg.data.holdout <= 0.5, "data.holdout", "must be a fraction in [0, 0.5]"),
        (0 < cfg.eval.inner_val <= 0.5, "eval.inner_val", "must be a fraction in (0, 0.5]"),
        (cfg.eval.patience >= 0, "eval.patience", "must be >= 0"),
        (not (cfg.model.init == "imagenet" and cfg.model.small_stem), "model.small_stem",
         "cannot be true with model.init=imagenet: ImageNet weights keep their own 7x7 stem"),
        (not (cfg.model.weights and cfg.model.init == "random"), "model.weights",
         "is set but model.init is random: set model.init to imagenet (or auto) to start from it"),
        (cfg.model.in_channels in (None, 1, 3), "model.in_channels", "must be 1, 3 or null (the data's)"),
        (cfg.data.dataset != "csv" or cfg.data.labels is not None, "data.labels",
         "must name the labels CSV (relative to data.root) when data.dataset is csv"),
        (cfg.data.dataset not in ("folder", "csv") or cfg.data.ordinal is not None, "data.ordinal",
         f"must be set for data.dataset={cfg.data.dataset}: true for graded labels (quadratic kappa), false for "
         f"unordered classes (macro-F1)"),
        (cfg.data.classes is None or len(set(cfg.data.classes)) == len(cfg.data.classes) >= 2, "data.classes",
         "must list at least 2 distinct classes"),
        (cfg.model.expander_layers >= 1, "model.expander_layers", "must be >= 1"),
        (cfg.optim.lr > 0, "optim.lr", "must be > 0"),
        (cfg.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0"),
        (cfg.train.epochs >= 1, "train.epochs", "must be >= 1"),
        (cfg.train.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1"),
        (cfg.optim.warmup_fraction is None or 0 <= cfg.optim.warmup_fraction < 1, "optim.warmup_fraction",
         "must be a fraction in [0, 1)"),
        (0 < cfg.augment.crop_min_scale <= cfg.augment.crop_max_scale <= 1, "augment.crop_min_scale",
         f"must satisfy 0 < crop_min_scale <= crop_max_scale ({cfg.augment.crop_max_scale}) <= 1"),
        (cfg.augment.jitter_strength >= 0, "augment.jitter_strength", "must be >= 0"),
        (cfg.data.crop_source_size is None or cfg.data.crop_source_size > cfg.data.image_size,
         "data.crop_source_size", f"must be larger than data.image_size ({cfg.data.image_size}) or null"),
        (not (cfg.augment.antialias and cfg.augment.resample == "bicubic" and cfg.augment.views == "kornia"),
         "augment.antialias", "with resample bicubic needs views torchvision (kornia's antialiased crop is "
         "bilinear area-averaging)"),
    ]
    a, o, t, e, m = cfg.augment, cfg.optim, cfg.train, cfg.eval, cfg.model
    finite = ("optim.lr", "optim.weight_decay", "optim.momentum", "optim.eta", "optim.warmup_epochs",
              "optim.final_lr_ratio", "train.min_delta", "eval.lr", "eval.weight_decay", "eval.lr_decay",
              "eval.dropout", "loss.sim_coeff", "loss.std_coeff", "loss.cov_coeff")
    checks = [(math.isfinite(get_key(cfg, k)), k, "must be a finite number") for k in finite] + checks
    checks += [
        (re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", t.device) is not None, "train.device",
         "must be auto, cpu, mps, cuda or cuda:N"),
        (cfg.data.fold_seed >= 0, "data.fold_seed", "must be >= 0 (numpy's generators take no negative seed)"),
        (t.seed >= 0 and e.seed >= 0, "train.seed", "and eval.seed must be >= 0"),
        (min(cfg.loss.sim_coeff, cfg.loss.std_coeff, cfg.loss.cov_coeff) >= 0, "loss.sim_coeff",
         "and std_coeff, cov_coeff must be >= 0 (a negative coefficient rewards what VICReg penalises)"),
        (cfg.loss.sim_coeff + cfg.loss.std_coeff + cfg.loss.cov_coeff > 0, "loss.sim_coeff",
         "and std_coeff, cov_coeff cannot all be 0"),
        (t.patience >= 0, "train.patience", "must be >= 0 (0: no early stopping)"),
        (t.min_delta >= 0, "train.min_delta", "must be >= 0"),
        (t.log_every_steps >= 0, "train.log_every_steps", "must be >= 0 (0: per epoch only)"),
        (all(0 <= b < 1 for b in o.betas), "optim.betas", "must both be in [0, 1)"),
        (o.momentum >= 0, "optim.momentum", "must be >= 0"),
        (o.eta > 0, "optim.eta", "must be > 0"),
        (o.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0"),
        (0 <= o.final_lr_ratio <= 1, "optim.final_lr_ratio", "must be in [0, 1]"),
        (e.epochs >= 1, "eval.epochs", "must be >= 1"),
        (e.batch_size >= 1, "eval.batch_size", "must be >= 1"),
        (e.lr > 0, "eval.lr", "must be > 0"),
        (e.weight_decay >= 0, "eval.weight_decay", "must be >= 0"),
        (0 <= e.dropout < 1, "eval.dropout", "must be in [0, 1)"),
        (e.head_hidden >= 1, "eval.head_hidden", "must be >= 1"),
        (0 < e.lr_decay <= 1, "eval.lr_decay", "must be in (0, 1]"),
        (e.unfreeze_every >= 1, "eval.unfreeze_every", "must be >= 1"),
        (m.expander_hidden >= 1, "model.expander_hidden", "must be >= 1"),
        (m.expander_out >= 1, "model.expander_out", "must be >= 1"),
        (0 < a.crop_ratio[0] <= a.crop_ratio[1], "augment.crop_ratio", "must be [low, high] with 0 < low <= high"),
        (0 <= a.blur_sigma[0] <= a.blur_sigma[1], "augment.blur_sigma", "must be [low, high] with 0 <= low <= high"),
        (min(a.brightness, a.contrast, a.saturation) >= 0, "augment.brightness",
         "and contrast, saturation must be >= 0"),
        (0 <= a.hue <= 0.5, "augment.hue", "must be in [0, 0.5]"),
        (cfg.data.synthetic_count >= 1 and cfg.data.synthetic_size >= 8, "data.synthetic_count",
         "must be >= 1 (and data.synthetic_size >= 8)"),
    ]
    probabilities = ("flip_p", "jitter_p", "grayscale_p", "blur_p_a", "blur_p_b", "solarize_p_a", "solarize_p_b")
    checks += [(0 <= getattr(cfg.augment, k) <= 1, f"augment.{k}", "must be a probability in [0, 1]")
               for k in probabilities]
    for ok, key, msg in checks:
        if not ok:
            value = get_key(cfg, key)
            raise ConfigError(f"{key}={value!r} {msg}")


def get_key(cfg: Any, dotted: str) -> Any:
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b=value` in a nested dict (creating sections), for overrides and sweeps."""
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`["optim.lr=0.01", "model.weights=null"]` -> [("optim.lr", 0.01), ...] (YAML values)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:  # a !!python tag, an unclosed bracket: one line
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        out.append((key.strip(), value))
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Read YAML `path` (or defaults when None), apply `section.key=value` overrides, check.
    A study file (sweeps/, recognised by its top-level `base:`) gives its base config, so that
    `check-data` or `pretrain` take the file a sweep runs on."""
    raw = read_yaml(path) if path is not None else {}
    if "base" in raw and not set(raw) & {f.name for f in dataclasses.fields(Config)}:
        base = raw["base"] if raw["base"] is not None else {}
        if not isinstance(base, dict):
            raise ConfigError(f"{path}: 'base' must be a mapping of config sections, not {type(base).__name__}")
        raw = copy.deepcopy(base)
    for key, value in parse_overrides(list(overrides)):
        set_key(raw, key, value)
    return config_from_dict(raw, source=str(path) if path is not None else "--set")


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), suitable for YAML and MLflow."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{'optim.lr': 0.3} -> {'optim': {'lr': 0.3}}: the inverse of flatten, for stored configs."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        set_key(out, key, value)
    return out


def flatten(cfg: Config) -> dict[str, Any]:
    """{'optim.lr': 0.3, ...}: every leaf with its dotted key."""
    out: dict[str, Any] = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            out[f"{section}.{key}"] = value
    return out


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    atomic_write(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
