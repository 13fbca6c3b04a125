"""The config tree: plain dataclasses ``Config(data, model, augment, loss, optim, train, eval)``,
each field with its default and a comment saying why (docs/configuration.md is generated from
them), and the allowed names of every choice, declared once as Literal types."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Literal

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
    # vicreg/data/own.py). Paths are relative to `root` unless absolute.
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


# Channels of the data sets whose images are all alike; folder and csv sets are looked at
# (vicreg.data.own.resolve_channels, which resolve_init calls before a run).
FIXED_CHANNELS = {"synthetic": 1, "drac22": 1, "digits": 1, "textures": 1, "cifar10": 3}


def is_ordinal(cfg: DataConfig) -> bool:
    """Are the labels graded (quadratic kappa the primary score) or unordered classes?"""
    return cfg.ordinal if cfg.ordinal is not None else cfg.dataset in ("drac22", "synthetic")


def primary_metric(cfg: DataConfig) -> str:
    """The score everything ranks, prunes and judges by: quadratic kappa for graded labels,
    macro-F1 for unordered classes (kappa would count a confusion of classes 0 and 4 as
    worse than one of 0 and 1, an order they do not have)."""
    return "kappa" if is_ordinal(cfg) else "f1"


def get_key(cfg: Any, dotted: str) -> Any:
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
