"""Downstream evaluation on the study's stored folds: probes, fine-tuning, scores, submission.

Protocols (`eval.protocol`):
  linear    frozen encoder, features extracted once, a trained linear layer per fold
  head      frozen encoder, features extracted once, an MLP head with dropout per fold
  conv+head the last ResNet stage trained with the head (the seed's best transfer setting)
  full      the whole network, discriminative learning rates per stage and gradual
            unfreezing from the top (Romero et al., Med. Phys. 2020; Howard & Ruder 2018)

Scores from scikit-learn: quadratic weighted kappa (the primary score of graded labels,
DRAC22's metric), macro-F1 (the primary score of unordered classes: data.ordinal false),
accuracy, macro one-vs-one AUC on probabilities, per-class recall, confusion matrix.
Three numbers, never mixed up:
  CV mean +- std   per-fold scores over the k validation folds (std with ddof=1)
  pooled           one score over all out-of-fold predictions, as the challenge scores a test set
  hold-out         images in no fold (vicreg.data.HOLDOUT), scored by the k fold models'
                   averaged probabilities; only when asked (confirmed configurations)
No number is selected on the data it reports: the head trains a fixed `eval.epochs`, or with
`eval.patience` > 0 stops early on an inner split of the training fold, never on the fold
being scored (Cawley & Talbot, JMLR 2010). Nor is anything fitted on its labels. The input
normalisation (a mean and std per channel) is the one exception to "training part only": the
frozen protocols normalise every image with the CV images' statistics, so that features are
extracted once (one encoder pass, not one per fold: on a trial that is the difference between
evaluation costing as much as pretraining and a small part of it). Those 2 x C numbers hold no
label, and pretraining itself saw the same CV images; the hold-out's and the test images'
pixels enter nothing. Fine-tuning (conv+head, full) normalises each fold with its training
part, as it pays no extra pass for it.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from .augment import channel_stats, normalise
from .config import EvalConfig, Protocol, names
from .data import HOLDOUT
from .data.rows import Rows, take
from .io import csv_text

STAGES = ("layer4", "layer3", "layer2", "layer1", "stem")  # top first: the unfreezing order
METRICS = ("kappa", "f1", "accuracy", "auc")  # what scores() reports; kappa or f1 is a set's primary


def scores(y: np.ndarray, probs: np.ndarray) -> dict:
    """Metrics of class probabilities (N, C) against integer labels (N,). AUC: for two classes
    scikit-learn wants the positive class's probability (N,); for more, one-vs-one macro AUC
    on (N, C)."""
    n_classes = probs.shape[1]
    labels = list(range(n_classes))
    pred = probs.argmax(1)
    if len(np.unique(y)) == n_classes == 2:
        auc = float(roc_auc_score(y, probs[:, 1]))
    elif len(np.unique(y)) == n_classes:
        auc = float(roc_auc_score(y, probs, multi_class="ovo", average="macro", labels=labels))
    else:  # a class absent from these labels: its AUCs are undefined
        auc = float("nan")
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "kappa": float(cohen_kappa_score(y, pred, weights="quadratic", labels=labels)),
        "f1": float(f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "auc": auc,
        "recall": recall_score(y, pred, labels=labels, average=None, zero_division=0).tolist(),
        "confusion": confusion_matrix(y, pred, labels=labels),
    }


def curve_scores(y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, quadratic kappa and macro-F1 of predicted labels (N,), from one confusion
    matrix: the per-epoch validation curve's numbers, the same as scikit-learn's
    (tests/test_evaluate.py checks them against it) without its per-call input validation,
    which cost more than the head's training on small folds. Kappa: Cohen (1968), weights
    (i - j)^2 / (C - 1)^2."""
    c = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes).astype(float)
    n = c.sum()
    i, j = np.indices(c.shape)
    w = (i - j) ** 2 / max(1, n_classes - 1) ** 2
    expected = np.outer(c.sum(1), c.sum(0)) / n
    kappa = 1 - (w * c).sum() / (w * expected).sum() if (w * expected).sum() > 0 else float("nan")
    tp, pred_n, true_n = np.diag(c), c.sum(0), c.sum(1)
    f1 = np.divide(2 * tp, pred_n + true_n, out=np.zeros(n_classes), where=(pred_n + true_n) > 0)
    return {"accuracy": float(tp.sum() / n), "kappa": float(kappa), "f1": float(f1.mean())}


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


@dataclass
class EvalData:
    """What an evaluation scores: uint8 `images` (N, C, H, W), `labels` (N,), `folds` (N,)
    (each image's validation fold, or HOLDOUT for the hold-out: vicreg.data.make_folds),
    optional unlabelled `test_images` that every fold's model also predicts, and the primary
    `metric` (kappa or f1: vicreg.config.primary_metric), on which an inner split stops early."""

    images: torch.Tensor
    labels: np.ndarray
    folds: np.ndarray
    test_images: torch.Tensor | None = None
    metric: str = "kappa"


@dataclass
class FoldResult:
    fold: int
    metrics: dict  # scores() of the validation images
    curves: list[dict] = field(default_factory=list)  # per epoch: train/val loss, acc, kappa
    best_epoch: int = 0  # the epoch kept: the last one, or the inner split's best
    probs: np.ndarray | None = None  # (N_val, C) validation probabilities (not serialised)
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (N, C), for predict_sets
    encoder: nn.Module | None = None  # the fold's fine-tuned encoder (fine-tuning protocols; not serialised)


def mean_std(vals: list[float | None]) -> tuple[float, float]:
    """Mean and sample std (ddof=1; nan for a single value), ignoring missing and non-finite
    values: over folds here, over seeds in the confirm stage."""
    a = np.array([v for v in vals if v is not None], dtype=float)
    a = a[np.isfinite(a)]
    if not len(a):
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else float("nan")


@dataclass
class EvalReport:
    label: str  # "vicreg", "random-init", "raw-pixels", "imagenet"
    protocol: str
    folds: list[FoldResult]
    test_probs: np.ndarray | None = None  # (N_test, C) averaged over the fold models
    pooled: dict | None = None  # scores() of all out-of-fold predictions together
    holdout: dict | None = None  # scores() of the hold-out images (fold models averaged)
    holdout_probs: np.ndarray | None = None  # (N_holdout, C) those averaged probabilities
    holdout_labels: np.ndarray | None = None  # (N_holdout,) their labels, for paired intervals
    n_train_per_fold: float = 0.0  # mean training images per fold (for the verdict's correction)
    n_val_per_fold: float = 0.0

    @property
    def fold_kappas(self) -> list[float]:
        return self.fold_scores("kappa")

    def fold_scores(self, metric: str) -> list[float]:
        """Each fold's validation score; a report stored before f1 existed has none (nan)."""
        return [f.metrics.get(metric, float("nan")) for f in self.folds]

    @property
    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in METRICS:
            out[f"{key}_mean"], out[f"{key}_std"] = mean_std([f.metrics.get(key) for f in self.folds])
        recalls = np.array([f.metrics["recall"] for f in self.folds])
        for c, r in enumerate(recalls.mean(0)):
            out[f"recall_{c}"] = float(r)
        for name, m in (("pooled", self.pooled), ("holdout", self.holdout)):
            if m is not None:
                out |= {f"{key}_{name}": float(m[key]) for key in METRICS if key in m}
        return out

    @property
    def confusion(self) -> np.ndarray:
        return sum(f.metrics["confusion"] for f in self.folds)

    def table(self) -> str:
        def row(name: str, m: dict, suffix: str = "") -> str:
            return f"{name:>18} " + " ".join(f"{m.get(k + suffix, float('nan')):7.4f}" for k in METRICS) + (
                "  " + " ".join(f"{r:.2f}" for r in m["recall"]) if "recall" in m else "")

        lines = [f"{self.label} ({self.protocol})",
                 f"{'':>18} {'kappa':>7} {'f1':>7} {'acc':>7} {'auc':>7}  recall per class"]
        lines += [row(f"CV fold {f.fold}", f.metrics) for f in self.folds]
        s = self.summary
        lines += [row("CV mean", s, "_mean"), row("CV std (ddof=1)", s, "_std")]
        for name, m in (("pooled out-of-fold", self.pooled), ("hold-out", self.holdout)):
            if m is not None:
                lines.append(row(name, m))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready: per-fold and pooled/hold-out scores, and the hold-out probabilities (no curves)."""
        def plain(m: dict | None) -> dict | None:
            return None if m is None else {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in m.items()}

        def listed(a: np.ndarray | None) -> list | None:
            return None if a is None else a.tolist()

        return {"label": self.label, "protocol": self.protocol, "pooled": plain(self.pooled),
                "holdout": plain(self.holdout), "holdout_probs": listed(self.holdout_probs),
                "holdout_labels": listed(self.holdout_labels), "n_train_per_fold": self.n_train_per_fold,
                "n_val_per_fold": self.n_val_per_fold,
                "folds": [{"fold": f.fold, "best_epoch": f.best_epoch, "metrics": plain(f.metrics)}
                          for f in self.folds]}

    @classmethod
    def from_dict(cls, d: dict) -> EvalReport:
        def arrays(m: dict | None) -> dict | None:
            return None if m is None else {**m, "confusion": np.array(m["confusion"])}

        folds = [FoldResult(f["fold"], arrays(f["metrics"]), [], f["best_epoch"]) for f in d["folds"]]
        def array(a: list | None) -> np.ndarray | None:
            return None if a is None else np.asarray(a)

        return cls(d["label"], d["protocol"], folds, None, arrays(d["pooled"]), arrays(d["holdout"]),
                   array(d.get("holdout_probs")), array(d.get("holdout_labels")),
                   d["n_train_per_fold"], d["n_val_per_fold"])


def scores_csv(reports: list[EvalReport]) -> str:
    """folds_scores.csv, the one scores file that `evaluate --out` and every sweep run write:
    `model,split,kappa,f1,accuracy,auc,epoch`, a row per model and CV fold ('fold K', with the
    head's chosen epoch), then its 'pooled' and 'holdout' rows where scored (no epoch)."""
    rows: list[list] = [["model", "split", "kappa", "f1", "accuracy", "auc", "epoch"]]
    for r in reports:
        rows += [[r.label, f"fold {f.fold}", *(f"{f.metrics.get(k, float('nan')):.6f}" for k in METRICS),
                  f.best_epoch] for f in r.folds]
        rows += [[r.label, name, *(f"{m.get(k, float('nan')):.6f}" for k in METRICS), ""]
                 for name, m in (("pooled", r.pooled), ("holdout", r.holdout)) if m is not None]
    return csv_text(rows)


# --- features and the cheap probe ----------------------------------------------------


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor | Rows, mean: torch.Tensor, std: torch.Tensor,
                     device: torch.device, batch_size: int = 128, flip: bool = False,
                     rows: np.ndarray | None = None) -> torch.Tensor:
    """Frozen features: uint8 (N, C, H, W), or its `rows` (M,) -> float32 (N or M, F) on the
    CPU. Reads a batch of images at a time (a memory map stays on disk)."""
    was_training = encoder.training
    encoder.eval().to(memory_format=torch.channels_last)
    cuda = device.type == "cuda"
    order = np.arange(images.shape[0]) if rows is None else np.asarray(rows)
    out = []
    for i in range(0, len(order), batch_size):
        x = normalise(take(images, order[i:i + batch_size]).to(device, non_blocking=True), mean, std)
        x = x.contiguous(memory_format=torch.channels_last)
        if flip:
            x = x.flip(-1)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out.append(encoder(x).float().cpu())
    encoder.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 0))


def cv_stats(images: torch.Tensor, folds: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-channel mean and std every frozen feature is normalised with: of the CV images
    (labels unused), never the hold-out's or the test images'. See the module docstring."""
    return channel_stats(Rows.of((images, np.flatnonzero(folds != HOLDOUT))))


PROBE_RIDGE = 0.1  # the probe's ridge penalty per training image (alpha = 0.1 n on standardised features)


def probe_rows(labels: np.ndarray, folds: np.ndarray, max_images: int | None, seed: int = 0) -> np.ndarray:
    """The CV images the probe uses: all, or a fixed stratified subset of `max_images` (the
    same in every trial and epoch: scikit-learn's stratified split with `seed`)."""
    cv = np.flatnonzero(folds != HOLDOUT)
    if not max_images or len(cv) <= max_images:
        return cv
    keep, _ = train_test_split(cv, train_size=max_images, stratify=labels[cv], random_state=seed)
    return np.sort(keep)


def probe_score(encoder: nn.Module, images: torch.Tensor, labels: np.ndarray, folds: np.ndarray,
                device: torch.device | str = "cpu", metric: str = "kappa", max_images: int | None = None) -> float:
    """Mean validation score (`metric`: kappa or f1) over the CV folds of a linear probe on
    frozen features: a ridge classifier (one-vs-all least squares, scikit-learn's
    RidgeClassifier, balanced class weights, alpha = PROBE_RIDGE x training images) on
    standardised features. Hold-out images are neither fitted nor scored, nor in the
    normalisation statistics. With `max_images`, a fixed stratified subset (probe_rows).

    Cheap enough to call every few pretraining epochs for monitoring and pruning: a direct
    solve (Cholesky), so it always converges, in milliseconds; the logistic regression it
    replaced needed 150-300 L-BFGS iterations per fold on these features and often stopped
    short (a ConvergenceWarning each time)."""
    device = torch.device(device)
    use = probe_rows(labels, folds, max_images)
    mean, std = cv_stats(images, folds)
    feats = extract_features(encoder, images, mean, std, device, rows=use).numpy()
    y, f = labels[use], folds[use]
    values = []
    for k in np.unique(f):
        tr, va = f != k, f == k
        scaler = StandardScaler().fit(feats[tr])
        clf = RidgeClassifier(alpha=PROBE_RIDGE * int(tr.sum()), class_weight="balanced")
        clf.fit(scaler.transform(feats[tr]), y[tr])
        pred = clf.predict(scaler.transform(feats[va]))
        if metric == "f1":
            values.append(f1_score(y[va], pred, labels=np.unique(labels), average="macro", zero_division=0))
        else:
            values.append(cohen_kappa_score(y[va], pred, weights="quadratic"))
    return float(np.mean(values))


def probe_kappa(encoder: nn.Module, images: torch.Tensor, labels: np.ndarray, folds: np.ndarray,
                device: torch.device | str = "cpu") -> float:
    """probe_score with quadratic kappa."""
    return probe_score(encoder, images, labels, folds, device, "kappa")


# --- models for the protocols --------------------------------------------------------


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


def _column_stats(x: torch.Tensor | Rows, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and sample std (ddof 1) of (N, F), read a chunk at a time (float64 sums)."""
    n, total, squares = len(x), 0.0, 0.0
    for i in range(0, n, chunk):
        part = x[i:i + chunk].double()
        total = total + part.sum(0)
        squares = squares + (part * part).sum(0)
    mean = total / n
    var = (squares - n * mean * mean) / max(1, n - 1)
    return mean.float(), var.clamp_min(0).sqrt().float()


def fit_head(train: FeatureSplit, val: FeatureSplit, spec: FitSpec) -> FoldResult:
    """The frozen protocols (linear, head): a classifier on features extracted once, scored on `val`.

    Features are standardised with the training fold's statistics: a random-init encoder's
    features are orders of magnitude smaller than a trained one's, and an unscaled linear
    layer then learns nothing in a few epochs (a baseline scored kappa 0.0). See FitSpec and
    _fit for `select` (early stopping on an inner split, never on `val`) and `predict_sets`."""
    cfg, device = spec.cfg, spec.device
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + spec.fold)
    torch.manual_seed(cfg.seed * 1000 + spec.fold)
    feat_mean, std = _column_stats(train.x)
    feat_mean = feat_mean.to(device)
    feat_std = torch.where(std > 0, std, torch.ones_like(std)).to(device)  # constant dims -> 0
    head = make_head(train.x.shape[1], spec.n_classes, cfg, spec.protocol).to(device)
    opt = torch.optim.AdamW([{"params": head.parameters(), "lr": cfg.lr}], weight_decay=cfg.weight_decay)

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
    groups = [{"params": head.parameters(), "lr": cfg.lr}]
    parts = stage_modules(encoder)
    for depth, name in enumerate(STAGES, start=1):
        if protocol == "full" or name == "layer4":
            groups.append({"params": [p for m in parts[name] for p in m.parameters()],
                           "lr": cfg.lr * cfg.lr_decay ** depth})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)

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


def fold_split(folds: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold k's (training, validation) image indices: training is every other CV fold, never
    the hold-out. (The null test's positive control patches this to leak, tests/test_sweeps.py.)"""
    return np.flatnonzero((folds != HOLDOUT) & (folds != k)), np.flatnonzero(folds == k)


def features_on_disk(encoder: nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     device: torch.device, path: Path, flip: bool = False, rows: np.ndarray | None = None
                     ) -> torch.Tensor:
    """extract_features written a batch at a time into a .npy memory map at `path` -> float32
    (N, F) backed by it: the features of a large set cost disk, not memory. With `rows`, only
    those rows are extracted (the others stay 0)."""
    from numpy.lib.format import open_memmap

    order = np.arange(images.shape[0]) if rows is None else np.asarray(rows)
    first = extract_features(encoder, images, mean, std, device, flip=flip, rows=order[:1])
    out = torch.from_numpy(open_memmap(path, mode="w+", dtype=np.float32, shape=(images.shape[0], first.shape[1])))
    for i in range(0, len(order), 1024):
        part = order[i:i + 1024]
        out[torch.from_numpy(part)] = extract_features(encoder, images, mean, std, device, flip=flip, rows=part)
    return out


def _fold(encoder: nn.Module, k: int, inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
          data: EvalData, cfg: EvalConfig, device: torch.device, score_holdout: bool
          ) -> tuple[FoldResult, np.ndarray, int]:
    """Fold k's model, fitted and scored -> (its result, its validation rows, its training count).
    `inputs`: (x, x_flip, x_test), features for the frozen protocols, else the images. Every side
    is Rows of x: an index, not a copy."""
    (x, x_flip, x_test), labels, folds = inputs, data.labels, data.folds
    frozen = cfg.protocol in ("linear", "head")
    tr, va = fold_split(folds, k)
    mean = std = None
    if not frozen:  # fine-tuning: normalised with the training part's statistics only
        mean, std = channel_stats(Rows.of((x, tr)))
    sets: dict[str, torch.Tensor | Rows] = {}
    if x_test is not None:
        sets["test"] = x_test
    hold = np.flatnonzero(folds == HOLDOUT)
    if score_holdout and len(hold):
        sets["holdout"] = Rows.of((x, hold))
    side = FeatureSplit if frozen else ImageSplit
    spec = FitSpec(int(labels.max()) + 1, cfg, cfg.protocol, device, k, predict_sets=sets, metric=data.metric)
    if cfg.patience > 0:  # early stopping on an inner split of the training fold only
        tr, inner = train_test_split(tr, test_size=cfg.inner_val, stratify=labels[tr],
                                     random_state=cfg.seed * 1000 + k)
        spec.select = side(Rows.of((x, inner)), labels[inner])
    val = side(Rows.of((x, va)), labels[va])
    if frozen:
        res = fit_head(FeatureSplit(Rows.of((x, tr)), labels[tr], Rows.of((x_flip, tr))), val, spec)
    else:
        res = finetune(encoder, ImageSplit(Rows.of((x, tr)), labels[tr], mean=mean, std=std), val, spec)
        res.encoder = None  # the report keeps scores, not k copies of the network
    return res, va, len(tr)


def evaluate(encoder: nn.Module, data: EvalData, cfg: EvalConfig, device: torch.device | str = "cpu",
             label: str = "vicreg", score_holdout: bool = False) -> EvalReport:
    """k-fold downstream evaluation of `encoder` on `data` (EvalData) -> EvalReport.

    Hold-out images (data.folds == HOLDOUT, see vicreg.data.make_folds) are left out of
    every fold and scored only with `score_holdout`. With `data.test_images`, each fold's
    model predicts them and the report holds the mean probabilities (for the submission
    file). cfg.protocol picks the protocol (raw pixels, which have no conv stage to fine-tune,
    are scored with a config whose protocol says so: vicreg.baselines).
    """
    protocol = cfg.protocol
    if protocol not in names(Protocol):
        raise ValueError(f"eval.protocol={protocol!r}: expected {', '.join(names(Protocol))}")
    device = torch.device(device)
    images, labels, folds, test_images = data.images, data.labels, data.folds, data.test_images
    cv = folds != HOLDOUT
    n_classes = int(labels.max()) + 1
    frozen = protocol in ("linear", "head")
    hold = np.flatnonzero(~cv)
    results, extra = [], {"test": [], "holdout": []}
    oof = np.zeros((len(labels), n_classes))
    n_train, n_val = [], []
    with tempfile.TemporaryDirectory(prefix="vicreg-features-") as tmp:
        if frozen:  # the features, extracted once for every fold (and once flipped: the frozen protocols' augmentation)
            mean, std = cv_stats(images, folds)
            x = features_on_disk(encoder.to(device), images, mean, std, device, Path(tmp) / "x.npy")
            x_flip = x
            if cfg.augment:  # only the training parts' flips are used: the CV images' (other rows stay 0)
                x_flip = features_on_disk(encoder, images, mean, std, device, Path(tmp) / "flip.npy",
                                          flip=True, rows=np.flatnonzero(cv))
            x_test = (features_on_disk(encoder, test_images, mean, std, device, Path(tmp) / "test.npy")
                      if test_images is not None else None)
        else:
            x, x_flip, x_test = images, images, test_images
        for k in sorted(np.unique(folds[cv]).tolist()):
            res, va, n_tr = _fold(encoder, k, (x, x_flip, x_test), data, cfg, device, score_holdout)
            results.append(res)
            oof[va] = res.probs
            n_train.append(n_tr)
            n_val.append(len(va))
            for name, p in res.predictions.items():
                extra[name].append(p)
    report = EvalReport(label, protocol, results, pooled=scores(labels[cv], oof[cv]),
                        n_train_per_fold=float(np.mean(n_train)), n_val_per_fold=float(np.mean(n_val)))
    if extra.get("test"):
        report.test_probs = np.mean(extra["test"], axis=0)
    if extra.get("holdout"):
        report.holdout_probs, report.holdout_labels = np.mean(extra["holdout"], axis=0), labels[hold]
        report.holdout = scores(labels[hold], report.holdout_probs)
    return report
