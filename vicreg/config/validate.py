"""Value checks that types alone cannot express: each a one-line error naming the key."""

from __future__ import annotations

import math
import re

from ..errors import ConfigError
from .tree import Config, get_key


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
