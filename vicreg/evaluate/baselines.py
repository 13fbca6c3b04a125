"""Baselines that a pretrained encoder must beat, scored under the same protocol, folds and
head seed as it, and cached: a baseline's scores depend only on what `baseline_key` hashes.

  random-init  the architecture as its torchvision constructor initialises it (Kaiming-normal
               convs, BatchNorm weight 1, bias 0), NOT with zero-init residuals: those make
               every residual branch output 0 in an untrained network, which then is its stem
               plus three 1x1 downsampling convs (zero_init_residual: Goyal et al. 2017).
  raw-pixels   the images themselves, average-pooled to at most 32x32 and flattened: the
               floor on small images. No conv stage exists to fine-tune, so the fine-tuning
               protocols score it with the `head` MLP (linear stays linear).
  imagenet     torchvision ImageNet weights from a local file, with their own 7x7 stem; grey
               input sums conv1's RGB filters. Scored whenever a file is found:
               eval.imagenet_weights, else the file `model.init: imagenet` would load
               (vicreg.imagenet). With `model.init: imagenet` this is the floor that continued
               pretraining must beat.

Both untrained encoders are scored as torchvision builds them, in eval mode: random-init's
BatchNorm layers then hold their constructed statistics (mean 0, variance 1, weight 1, bias 0),
which makes each one the identity, so the network is the plain Kaiming-initialised ResNet;
imagenet keeps the statistics it was trained with (a grey image through summed RGB filters is
the RGB image (x, x, x), which those statistics fit). We tried estimating random-init's
statistics on the images instead: every residual branch then weighs as much as its skip
path, and the probe fell (synthetic set, `python benchmarks/random_init_variants.py`), so
that variant would be a weaker floor, flattering pretraining. Features are standardised per
fold before any head, so the un-normalised scale does not matter.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from ..config import Config, ModelConfig, primary_metric, to_dict
from ..imagenet import find_imagenet_file
from ..io import atomic_write, digest, file_digest, file_lock
from ..model import build_encoder
from .protocol import EvalData, evaluate
from .report import EvalReport

BASELINES = ("random-init", "raw-pixels", "imagenet")
RAW_PIXELS_SIDE = 32  # raw pixels are pooled to at most this side (1024 features per channel)


class RawPixels(nn.Module):
    """(B, C, H, W) -> (B, C * s * s) with s = min(H, RAW_PIXELS_SIDE): pooled pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side = min(x.shape[-1], RAW_PIXELS_SIDE)
        return nn.functional.adaptive_avg_pool2d(x, side).flatten(1)


def imagenet_file(cfg: Config) -> Path | None:
    """The imagenet baseline's weights: eval.imagenet_weights, else what init imagenet would load."""
    explicit = cfg.eval.imagenet_weights or (cfg.model.weights if cfg.model.init != "random" else None)
    return find_imagenet_file(cfg.model.arch, explicit)


def baseline_model(kind: str, cfg: Config) -> ModelConfig | None:
    """The encoder config of `kind` (None for raw pixels): the same for every trial of a study,
    whatever it searches for model.init, so that all trials face the same floors."""
    if kind == "raw-pixels":
        return None
    if kind == "random-init":  # the stem a random start gets (a trial's ImageNet start has its own)
        stem = cfg.model.small_stem if cfg.model.init == "random" else None
        return dataclasses.replace(cfg.model, init="random", weights=None, small_stem=stem)
    if kind == "imagenet":
        path = imagenet_file(cfg)
        if path is None:
            raise ValueError("the imagenet baseline needs a local torchvision weights file (eval.imagenet_weights)")
        return dataclasses.replace(cfg.model, init="imagenet", weights=str(path), small_stem=None)
    raise ValueError(f"unknown baseline {kind!r}: expected one of {', '.join(BASELINES)}")


def baseline_encoder(kind: str, cfg: Config, seed: int) -> nn.Module:
    """The untrained encoder of `kind`, built the library's default way (seeded)."""
    model_cfg = baseline_model(kind, cfg)
    if model_cfg is None:
        return RawPixels()
    torch.manual_seed(seed)
    return build_encoder(model_cfg, cfg.data.image_size, zero_init_residual=False).eval()


def baseline_kinds(cfg: Config) -> list[str]:
    """The baselines this config asks for: none without eval.baselines; imagenet with a file."""
    if not cfg.eval.baselines:
        return []
    return [k for k in BASELINES if k != "imagenet" or imagenet_file(cfg) is not None]


# The trainer's files whose code a baseline's scores run through: a change to any of them (a
# different init, normalisation or head) must not reuse a cached floor computed before it.
# Paths in the vicreg package; a folder stands for every module in it.
BASELINE_SOURCES = ("evaluate", "model.py", "augment.py", "imagenet.py", "config")


@functools.cache
def source_digest() -> str:
    """A digest of BASELINE_SOURCES' text, and the torch and torchvision versions."""
    import torchvision

    h = hashlib.blake2b(digest_size=8)
    package = Path(__file__).parents[1]
    for name in BASELINE_SOURCES:
        path = package / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(file.read_bytes())
    h.update(f"torch {torch.__version__} torchvision {torchvision.__version__}".encode())
    return h.hexdigest()


@functools.cache
def _weights_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)  # keyed by size and mtime: a replaced file is hashed again


def baseline_key(kind: str, cfg: Config, data_digest: str, seed: int,
                 device: torch.device | str = "cpu") -> str:
    """What a baseline's scores depend on: its kind, the encoder it builds (architecture, init
    choice and stem, from baseline_model), the image size, the weights file's content (not its
    path), the raw-pixel side, the evaluation config (less the switches that do not
    change a score), the labelled images, labels and folds (`data_digest`, from io.digest), the
    seed, the device type and precision (bf16 autocast on CUDA), and the code and library
    versions it runs through (source_digest). Not the pretraining recipe."""
    d = to_dict(cfg)
    ev = {k: v for k, v in d["eval"].items() if k not in ("baselines", "imagenet_weights")}
    model = baseline_model(kind, cfg)
    weights = None
    if model is not None:  # what builds the encoder, less the expander (unused by a baseline)
        if model.weights:
            stat = Path(model.weights).stat()
            weights = _weights_digest(str(Path(model.weights).resolve()), stat.st_size, stat.st_mtime_ns)
        model = {k: v for k, v in dataclasses.asdict(model).items()
                 if not k.startswith("expander") and k != "weights"}
    device_type = torch.device(device).type
    desc = {"kind": kind, "model": model, "weights": weights,
            "raw_pixels_side": RAW_PIXELS_SIDE if kind == "raw-pixels" else None, "size": cfg.data.image_size,
            "eval": ev, "metric": primary_metric(cfg.data), "seed": seed, "data": data_digest, "device": device_type,
            "precision": "bf16-autocast" if device_type == "cuda" else "fp32", "code": source_digest()}
    return hashlib.blake2b(json.dumps(desc, sort_keys=True).encode(), digest_size=12).hexdigest()


def score_baseline(kind: str, cfg: Config, data: EvalData, device: torch.device | str = "cpu", seed: int = 0,
                   score_holdout: bool = False, cache_dir: str | Path | None = None,
                   data_digest: str | None = None) -> EvalReport:
    """One baseline's report on `data` under cfg.eval (head seed cfg.eval.seed; encoder seed `seed`).

    With `cache_dir`, the report is stored there as JSON under its key and reused by every
    later call (every trial and worker of a study); a file lock makes concurrent workers
    compute it once."""
    device = torch.device(device)
    protocol = cfg.eval.protocol if kind != "raw-pixels" or cfg.eval.protocol == "linear" else "head"
    eval_cfg = dataclasses.replace(cfg.eval, protocol=protocol)

    def compute() -> EvalReport:
        return evaluate(baseline_encoder(kind, cfg, seed), data, eval_cfg, device, kind, score_holdout)

    if cache_dir is None:
        return compute()
    key = baseline_key(kind, cfg, data_digest or digest(data.images, data.labels, data.folds), seed, device)
    path = Path(cache_dir) / f"{kind}-{key}{'-holdout' if score_holdout else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            try:
                return EvalReport.from_dict(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError):
                pass  # a damaged cache entry is derived data: recompute it
        report = compute()
        atomic_write(path, json.dumps(report.to_dict()))
    return report


def score_baselines(cfg: Config, data: EvalData, device: torch.device | str = "cpu", seed: int = 0,
                    score_holdout: bool = False, cache_dir: str | Path | None = None) -> list[EvalReport]:
    """Every baseline `cfg` asks for (baseline_kinds), in order; the data is hashed once."""
    data_digest = digest(data.images, data.labels, data.folds) if cache_dir is not None else None
    return [score_baseline(k, cfg, data, device, seed, score_holdout, cache_dir, data_digest)
            for k in baseline_kinds(cfg)]
