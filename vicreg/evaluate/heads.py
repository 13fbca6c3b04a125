"""What is trained on top of the encoder, per fold: a linear layer or an MLP head on frozen
features (fit_head), or the head with the last stage or the whole encoder (finetune), by one
training loop with oversampled batches and, optionally, early stopping on an inner split of
the training fold (never on the fold being scored: Cawley & Talbot, JMLR 2010)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..augment import normalise
from ..config import EvalConfig
from ..data.rows import Rows
from ..optim import fused_for
from .features import column_stats
from .metrics import curve_scores, scores
from .report import FoldResult

STAGES = ("layer4", "layer3", "layer2", "layer1", "stem")  # top first: the unfreezing order


@dataclass
class FeatureSplit:
    """One side of a fold for the frozen protocols: features `x` (N, F) and labels `y` (N,);
    a training side also carries `x_flip`, the flipped images' features (their augmentation)."""

    x: torch.Tensor | Rows
    y: np.ndarray
    x_flip: torch.Tensor | Rows | None = None


@dataclass
class ImageSplit:
    """One side of a fold for the fine-tuning protocols: uint8 images `x` (N, C, H, W) and
    labels `y` (N,); a training side also carries its per-channel `mean`/`std` (C,), which
    normalise every image the fold's model sees."""

    x: torch.Tensor | Rows
    y: np.ndarray
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None


Split = FeatureSplit | ImageSplit


@dataclass
class FitSpec:
    """How one fold's classifier is fitted: `n_classes`, the eval config and protocol, the
    device, the fold (its seed), `select` (an inner split of the training fold for early
    stopping, never the fold scored) and `predict_sets` (name -> inputs like the validation
    side's, e.g. test and hold-out, that the kept model also predicts)."""

    n_classes: int
    cfg: EvalConfig
    protocol: str
    device: torch.device
    fold: int
    select: Split | None = None
    predict_sets: dict[str, torch.Tensor] | None = None
    metric: str = "kappa"  # what the inner split's early stopping maximises


def make_head(in_dim: int, n_classes: int, cfg: EvalConfig, protocol: str) -> nn.Module:
    if protocol == "linear":
        return nn.Linear(in_dim, n_classes)
    return nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(in_dim, cfg.head_hidden), nn.ReLU(inplace=True),
                         nn.Dropout(cfg.dropout), nn.Linear(cfg.head_hidden, n_classes))


def stage_modules(encoder: nn.Module) -> dict[str, list[nn.Module]]:
    """The torchvision ResNet's parts by stage name (see STAGES)."""
    return {"stem": [encoder.conv1, encoder.bn1], "layer1": [encoder.layer1], "layer2": [encoder.layer2],
            "layer3": [encoder.layer3], "layer4": [encoder.layer4]}


def _trainable_stages(protocol: str, epoch: int, cfg: EvalConfig) -> list[str]:
    if protocol == "conv+head":
        return ["layer4"]
    if protocol == "full":  # gradual unfreezing: one more stage every `unfreeze_every` epochs
        return list(STAGES[: min(len(STAGES), 1 + epoch // max(1, cfg.unfreeze_every))])
    return []


def _balanced_indices(labels: np.ndarray, gen: torch.Generator) -> torch.Tensor:
    """N indices drawn with replacement, each class equally likely (oversampling)."""
    counts = np.bincount(labels)
    w = torch.tensor(1.0 / counts[labels], dtype=torch.float64)
    return torch.multinomial(w, len(labels), replacement=True, generator=gen)


def _light_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and up-to-12.5% random shifts (padded by reflection)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)
    pad = max(1, h // 16)
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
    return x[:, :, dy:dy + h, dx:dx + w]


def fit_head(train: FeatureSplit, val: FeatureSplit, spec: FitSpec) -> FoldResult:
    """The frozen protocols (linear, head): a classifier on features extracted once, scored on `val`.

    Features are standardised with the training fold's statistics: a random-init encoder's
    features are orders of magnitude smaller than a trained one's, and an unscaled linear
    layer then learns nothing in a few epochs (a baseline scored kappa 0.0). See FitSpec and
    _fit for `select` (early stopping on an inner split, never on `val`) and `predict_sets`."""
    cfg, device = spec.cfg, spec.device
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + spec.fold)
    torch.manual_seed(cfg.seed * 1000 + spec.fold)
    feat_mean, std = column_stats(train.x)
    feat_mean = feat_mean.to(device)
    feat_std = torch.where(std > 0, std, torch.ones_like(std)).to(device)  # constant dims -> 0
    head = make_head(train.x.shape[1], spec.n_classes, cfg, spec.protocol).to(device)
    params = list(head.parameters())
    opt = torch.optim.AdamW([{"params": params, "lr": cfg.lr}], weight_decay=cfg.weight_decay, fused=fused_for(params))

    def forward(x: torch.Tensor, training: bool) -> torch.Tensor:
        return head((x.to(device) - feat_mean) / feat_std)

    def batch(idx: torch.Tensor) -> torch.Tensor:
        flipped = cfg.augment and torch.rand(1, generator=gen).item() < 0.5
        return (train.x_flip if flipped else train.x)[idx]

    return _fit(_Trainable(head, None, forward, batch, opt), train.y, val, spec, gen)


def finetune(encoder: nn.Module, train: ImageSplit, val: ImageSplit, spec: FitSpec) -> FoldResult:
    """The fine-tuning protocols on a copy of `encoder` (every fold starts from the same
    weights): conv+head trains the last stage with the head; full trains every stage with
    discriminative learning rates (each deeper stage * lr_decay) and gradual unfreezing from
    the top. `train.x` are uint8 images normalised with `train.mean`/`train.std`; the result
    holds the fold's encoder. See FitSpec and _fit for `select` and `predict_sets`."""
    cfg, device, protocol = spec.cfg, spec.device, spec.protocol
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + spec.fold)
    torch.manual_seed(cfg.seed * 1000 + spec.fold)
    encoder = copy.deepcopy(encoder).to(device)
    with torch.no_grad():
        in_dim = encoder.eval()(normalise(train.x[:2].to(device), train.mean, train.std)).shape[1]
    head = make_head(in_dim, spec.n_classes, cfg, protocol).to(device)
    groups = [{"params": list(head.parameters()), "lr": cfg.lr}]
    parts = stage_modules(encoder)
    for depth, name in enumerate(STAGES, start=1):
        if protocol == "full" or name == "layer4":
            groups.append({"params": [p for m in parts[name] for p in m.parameters()],
                           "lr": cfg.lr * cfg.lr_decay ** depth})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=fused_for(groups))

    def forward(x: torch.Tensor, training: bool) -> torch.Tensor:
        x = normalise(x.to(device), train.mean, train.std)
        if training and cfg.augment:
            x = _light_augment(x, gen)
        return head(encoder(x))

    def before_epoch(epoch: int) -> None:
        active = _trainable_stages(protocol, epoch, cfg)
        encoder.eval()  # frozen stages keep their BN statistics
        for name, mods in parts.items():
            for m in mods:
                m.train(name in active)
                m.requires_grad_(name in active)

    result = _fit(_Trainable(head, encoder, forward, lambda idx: train.x[idx], opt, before_epoch), train.y, val,
                  spec, gen)
    result.encoder = encoder
    return result


@dataclass
class _Trainable:
    """What _fit trains, as each protocol builds it: the head (and the encoder, when it is
    fine-tuned), `forward(x, training)` -> logits, `batch(indices)` -> a training batch's
    inputs, the optimiser, and an optional `before_epoch(epoch)` (gradual unfreezing)."""

    head: nn.Module
    encoder: nn.Module | None
    forward: Callable[[torch.Tensor, bool], torch.Tensor]
    batch: Callable[[torch.Tensor], torch.Tensor]
    opt: torch.optim.Optimizer
    before_epoch: Callable[[int], None] | None = None


def _fit(model: _Trainable, y: np.ndarray, val: Split, spec: FitSpec, gen: torch.Generator) -> FoldResult:
    """The training loop both protocols share: `cfg.epochs` epochs of (oversampled) batches
    `model.batch(indices)` through `model.forward(x, training)`, a validation curve per epoch,
    and the kept model: the last epoch's, or, when `spec.select` is given, the epoch with the
    best kappa on it (an inner split of the training fold, with `cfg.patience`): `val` never
    chooses anything (Cawley & Talbot, JMLR 2010). `spec.predict_sets` maps names to inputs
    like `val.x` (test, hold-out) that the kept model also predicts."""
    cfg, device, select, head, forward = spec.cfg, spec.device, spec.select, model.head, model.forward
    y_train = torch.as_tensor(y)
    modules = [head] + ([model.encoder] if model.encoder is not None else [])

    def predict(x: torch.Tensor) -> np.ndarray:
        for m in modules:
            m.eval()
        with torch.no_grad():
            out = [F.softmax(forward(x[i:i + 256], False).float(), 1).cpu() for i in range(0, len(x), 256)]
        return torch.cat(out).numpy()

    def snapshot(epoch: int) -> tuple:
        return [copy.deepcopy(m.state_dict()) for m in modules], epoch

    best, kept, curves, wait = -np.inf, None, [], 0
    for epoch in range(cfg.epochs):
        if model.before_epoch is not None:
            model.before_epoch(epoch)
        head.train()
        order = _balanced_indices(y, gen) if cfg.oversample else torch.randperm(len(y_train), generator=gen)
        # Sums stay on the device; read once per epoch.
        total, correct, loss_sum = 0, torch.zeros((), device=device), torch.zeros((), device=device)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2:
                continue
            logits = forward(model.batch(idx), True)
            loss = F.cross_entropy(logits.float(), y_train[idx].to(device))
            model.opt.zero_grad(set_to_none=True)
            loss.backward()
            model.opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == y_train[idx].to(device)).sum()
            total += len(idx)
        # The validation curve is drawn for the user; it chooses nothing.
        probs = predict(val.x)
        m = curve_scores(val.y, probs.argmax(1), probs.shape[1])
        log_p = torch.log(torch.as_tensor(probs).clamp_min(1e-8))
        curves.append({"epoch": epoch + 1, "train_loss": float(loss_sum) / max(total, 1),
                       "train_accuracy": float(correct) / max(total, 1),
                       "val_loss": float(F.nll_loss(log_p, torch.as_tensor(val.y))),
                       "val_accuracy": m["accuracy"], "val_kappa": m["kappa"], "val_f1": m["f1"]})
        if select is None:
            continue
        inner_probs = predict(select.x)
        inner = curve_scores(select.y, inner_probs.argmax(1), inner_probs.shape[1])[spec.metric]
        curves[-1][f"inner_{spec.metric}"] = inner
        if inner > best:
            best, wait, kept = inner, 0, snapshot(epoch)
        else:
            wait += 1
            if cfg.patience and wait >= cfg.patience:
                break
    if kept is not None:
        for module, state in zip(modules, kept[0]):
            module.load_state_dict(state)
    kept_epoch = kept[1] + 1 if kept is not None else len(curves)
    val_probs = probs if kept is None else predict(val.x)  # the last epoch's, unless one was kept
    return FoldResult(spec.fold, scores(val.y, val_probs), curves, kept_epoch, val_probs,
                      {name: predict(x) for name, x in (spec.predict_sets or {}).items()})
