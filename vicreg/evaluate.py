"""Downstream evaluation on the study's stored folds: probes, fine-tuning, scores, submission.

Protocols (`eval.protocol`):
  linear    frozen encoder, features extracted once, a trained linear layer
  head      frozen encoder, features extracted once, MLP head with dropout
  conv+head the last ResNet stage trained with the head (the seed's best transfer setting)
  full      the whole network, discriminative learning rates per stage and gradual
            unfreezing from the top (Romero et al., Med. Phys. 2020; Howard & Ruder 2018)

Scores per fold and mean +- std: quadratic weighted kappa (DRAC22's primary metric),
accuracy, macro one-vs-one AUC on probabilities (secondary), per-class recall and the
confusion matrix, all from scikit-learn. Each fold's model is the epoch with the best
validation kappa (early stopping as configured), which makes the k-fold score slightly
optimistic; every trial of a study is scored the same way, so trials stay comparable.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, recall_score, roc_auc_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from .augment import channel_stats, normalise
from .config import EvalConfig, ModelConfig
from .model import build_encoder

STAGES = ("layer4", "layer3", "layer2", "layer1", "stem")  # top first: the unfreezing order


def scores(y: np.ndarray, probs: np.ndarray) -> dict:
    """Metrics of class probabilities (N, C) against integer labels (N,)."""
    n_classes = probs.shape[1]
    labels = list(range(n_classes))
    pred = probs.argmax(1)
    if len(np.unique(y)) == n_classes:
        auc = float(roc_auc_score(y, probs, multi_class="ovo", average="macro", labels=labels))
    else:  # a class absent from these labels: its one-vs-one AUCs are undefined
        auc = float("nan")
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "kappa": float(cohen_kappa_score(y, pred, weights="quadratic", labels=labels)),
        "auc": auc,
        "recall": recall_score(y, pred, labels=labels, average=None, zero_division=0).tolist(),
        "confusion": confusion_matrix(y, pred, labels=labels),
    }


@dataclass
class FoldResult:
    fold: int
    metrics: dict  # scores() of the validation images
    curves: list[dict] = field(default_factory=list)  # per epoch: train/val loss, acc, kappa
    best_epoch: int = 0


@dataclass
class EvalReport:
    label: str  # "vicreg", "random-init", "imagenet"
    protocol: str
    folds: list[FoldResult]
    test_probs: np.ndarray | None = None  # (N_test, C) averaged over the fold models

    @property
    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in ("kappa", "accuracy", "auc"):
            vals = np.array([f.metrics[key] for f in self.folds], dtype=float)
            out[f"{key}_mean"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
            out[f"{key}_std"] = float(np.nanstd(vals)) if np.isfinite(vals).any() else float("nan")
        recalls = np.array([f.metrics["recall"] for f in self.folds])
        for c, r in enumerate(recalls.mean(0)):
            out[f"recall_{c}"] = float(r)
        return out

    @property
    def confusion(self) -> np.ndarray:
        return sum(f.metrics["confusion"] for f in self.folds)

    def table(self) -> str:
        lines = [f"{self.label} ({self.protocol})",
                 f"{'fold':>6} {'kappa':>7} {'acc':>7} {'auc':>7}  recall per class"]
        for f in self.folds:
            m = f.metrics
            rec = " ".join(f"{r:.2f}" for r in m["recall"])
            lines.append(f"{f.fold:>6} {m['kappa']:7.4f} {m['accuracy']:7.4f} {m['auc']:7.4f}  {rec}")
        s = self.summary
        lines.append(f"{'mean':>6} {s['kappa_mean']:7.4f} {s['accuracy_mean']:7.4f} {s['auc_mean']:7.4f}")
        lines.append(f"{'+-':>6} {s['kappa_std']:7.4f} {s['accuracy_std']:7.4f} {s['auc_std']:7.4f}")
        return "\n".join(lines)


# --- features and the cheap probe ----------------------------------------------------


@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                     device: torch.device, batch_size: int = 128, flip: bool = False) -> torch.Tensor:
    """Frozen features: uint8 (N, C, H, W) -> float32 (N, F) on the CPU."""
    was_training = encoder.training
    encoder.eval().to(memory_format=torch.channels_last)
    cuda = device.type == "cuda"
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = normalise(images[i:i + batch_size].to(device, non_blocking=True), mean, std)
        x = x.contiguous(memory_format=torch.channels_last)
        if flip:
            x = x.flip(-1)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            out.append(encoder(x).float().cpu())
    encoder.train(was_training)
    return torch.cat(out)


def probe_kappa(encoder: nn.Module, images: torch.Tensor, labels: np.ndarray, folds: np.ndarray,
                device: torch.device | str = "cpu") -> float:
    """Mean validation kappa of a logistic regression on frozen features, over the folds.

    Cheap enough to call every few pretraining epochs for monitoring and pruning.
    """
    device = torch.device(device)
    mean, std = channel_stats(images)
    feats = extract_features(encoder, images, mean, std, device).numpy()
    kappas = []
    for k in np.unique(folds):
        tr, va = folds != k, folds == k
        scaler = StandardScaler().fit(feats[tr])
        clf = LogisticRegression(max_iter=300, class_weight="balanced")
        clf.fit(scaler.transform(feats[tr]), labels[tr])
        pred = clf.predict(scaler.transform(feats[va]))
        kappas.append(cohen_kappa_score(labels[va], pred, weights="quadratic"))
    return float(np.mean(kappas))


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


def fit_fold(encoder: nn.Module, train: dict, val: dict, n_classes: int, cfg: EvalConfig, protocol: str,
             device: torch.device, fold: int, test: dict | None = None
             ) -> tuple[FoldResult, np.ndarray | None, nn.Module, nn.Module]:
    """Train one fold's classifier on a copy of `encoder`; keep the epoch with the best val kappa.

    `train` holds "x" (features (N, F) for frozen protocols, else uint8 images), "x_flip"
    (flipped features), "y", and the images' "mean"/"std"; `val` and `test` hold "x" (and
    "y"). Returns (result, test probabilities or None, the fold's encoder, its head).
    """
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + fold)
    torch.manual_seed(cfg.seed * 1000 + fold)
    frozen = protocol in ("linear", "head")
    if not frozen:  # trained per fold: every fold starts from the same weights
        encoder = copy.deepcopy(encoder).to(device)
    if frozen:
        in_dim = train["x"].shape[1]
        # Standardise features with the training fold's statistics: a random-init encoder's
        # features are orders of magnitude smaller than a trained one's, and an unscaled
        # linear layer then learns nothing in a few epochs (a baseline scored kappa 0.0).
        feat_mean = train["x"].mean(0).to(device)
        std = train["x"].std(0)
        feat_std = torch.where(std > 0, std, torch.ones_like(std)).to(device)  # constant dims -> 0
    else:
        with torch.no_grad():
            probe = normalise(train["x"][:2].to(device), train["mean"], train["std"])
            in_dim = encoder.eval()(probe).shape[1]
    head = make_head(in_dim, n_classes, cfg, protocol).to(device)
    groups = [{"params": head.parameters(), "lr": cfg.lr}]
    if not frozen:  # discriminative learning rates: each deeper stage * lr_decay
        parts = stage_modules(encoder)
        for depth, name in enumerate(STAGES, start=1):
            params = [p for m in parts[name] for p in m.parameters()]
            if protocol == "full" or name == "layer4":
                groups.append({"params": params, "lr": cfg.lr * cfg.lr_decay ** depth})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    y_train = torch.as_tensor(train["y"])

    def forward(x: torch.Tensor, training: bool) -> torch.Tensor:
        if frozen:
            return head((x.to(device) - feat_mean) / feat_std)
        x = normalise(x.to(device), train["mean"], train["std"])
        if training and cfg.augment:
            x = _light_augment(x, gen)
        return head(encoder(x))

    def predict(batch_x: torch.Tensor) -> np.ndarray:
        head.eval()
        if not frozen:
            encoder.eval()
        with torch.no_grad():
            out = [F.softmax(forward(batch_x[i:i + 256], False).float(), 1).cpu()
                   for i in range(0, len(batch_x), 256)]
        return torch.cat(out).numpy()

    best, best_state, curves, wait = -np.inf, None, [], 0
    for epoch in range(cfg.epochs):
        if not frozen:
            active = _trainable_stages(protocol, epoch, cfg)
            encoder.eval()  # frozen stages keep their BN statistics
            for name, mods in stage_modules(encoder).items():
                for m in mods:
                    m.train(name in active)
                    m.requires_grad_(name in active)
        head.train()
        if cfg.oversample:
            order = _balanced_indices(train["y"], gen)
        else:
            order = torch.randperm(len(y_train), generator=gen)
        # Sums stay on the device; read once per epoch.
        total, correct, loss_sum = 0, torch.zeros((), device=device), torch.zeros((), device=device)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            if len(idx) < 2:
                continue
            use_flipped = frozen and cfg.augment and torch.rand(1, generator=gen).item() < 0.5
            x = (train["x_flip"] if use_flipped else train["x"])[idx]
            logits = forward(x, True)
            loss = F.cross_entropy(logits.float(), y_train[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == y_train[idx].to(device)).sum()
            total += len(idx)
        probs = predict(val["x"])
        m = scores(val["y"], probs)
        log_p = torch.log(torch.as_tensor(probs).clamp_min(1e-8))
        val_loss = float(F.nll_loss(log_p, torch.as_tensor(val["y"])))
        curves.append({"epoch": epoch + 1, "train_loss": float(loss_sum) / max(total, 1),
                       "train_accuracy": float(correct) / max(total, 1), "val_loss": val_loss,
                       "val_accuracy": m["accuracy"], "val_kappa": m["kappa"]})
        if m["kappa"] > best:
            best, wait = m["kappa"], 0
            enc_state = None if frozen else copy.deepcopy(encoder.state_dict())
            best_state = (copy.deepcopy(head.state_dict()), enc_state, epoch, m)
        else:
            wait += 1
            if cfg.patience and wait >= cfg.patience:
                break
    head.load_state_dict(best_state[0])
    if best_state[1] is not None:
        encoder.load_state_dict(best_state[1])
    test_probs = predict(test["x"]) if test is not None else None
    return FoldResult(fold, best_state[3], curves, best_state[2] + 1), test_probs, encoder, head


def evaluate(encoder: nn.Module, images: torch.Tensor, labels: np.ndarray, folds: np.ndarray, cfg: EvalConfig,
             device: torch.device | str = "cpu", label: str = "vicreg",
             test_images: torch.Tensor | None = None) -> EvalReport:
    """k-fold downstream evaluation of `encoder` on uint8 images (N, C, H, W) -> EvalReport.

    `folds[i]` is image i's validation fold (see vicreg.data.make_folds). With
    `test_images`, each fold's best model predicts them and the report holds the mean
    probabilities (for the DRAC22 submission file).
    """
    if cfg.protocol not in ("linear", "head", "conv+head", "full"):
        raise ValueError(f"eval.protocol={cfg.protocol!r}: expected linear, head, conv+head or full")
    device = torch.device(device)
    mean, std = channel_stats(images)
    n_classes = int(labels.max()) + 1
    frozen = cfg.protocol in ("linear", "head")
    if frozen:  # extract once (and once flipped, the light augmentation of frozen protocols)
        enc = encoder.to(device)
        x = extract_features(enc, images, mean, std, device)
        x_flip = extract_features(enc, images, mean, std, device, flip=True) if cfg.augment else x
        x_test = extract_features(enc, test_images, mean, std, device) if test_images is not None else None
    else:
        x, x_flip, x_test = images, images, test_images
    results, test_probs = [], []
    for k in sorted(np.unique(folds).tolist()):
        tr, va = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        train = {"x": x[tr], "x_flip": x_flip[tr], "y": labels[tr], "mean": mean, "std": std}
        val = {"x": x[va], "y": labels[va]}
        test = {"x": x_test} if x_test is not None else None
        res, probs, _, _ = fit_fold(encoder, train, val, n_classes, cfg, cfg.protocol, device, k, test)
        results.append(res)
        if probs is not None:
            test_probs.append(probs)
    return EvalReport(label, cfg.protocol, results, np.mean(test_probs, axis=0) if test_probs else None)


def evaluate_with_baselines(encoder: nn.Module, model_cfg: ModelConfig, image_size: int, images: torch.Tensor,
                            labels: np.ndarray, folds: np.ndarray, cfg: EvalConfig,
                            device: torch.device | str = "cpu", test_images: torch.Tensor | None = None,
                            seed: int = 0) -> list[EvalReport]:
    """The VICReg encoder's report, then the same protocol on baselines (when eval.baselines):
    a randomly initialised encoder, and an ImageNet-initialised one if eval.imagenet_weights
    names a local torchvision weights file. Shows whether pretraining helped."""
    reports = [evaluate(encoder, images, labels, folds, cfg, device, "vicreg", test_images)]
    if cfg.baselines:
        torch.manual_seed(seed)
        rand = build_encoder(dataclasses.replace(model_cfg, weights=None), image_size)
        reports.append(evaluate(rand, images, labels, folds, cfg, device, "random-init"))
        if cfg.imagenet_weights:
            imnet = build_encoder(dataclasses.replace(model_cfg, weights=cfg.imagenet_weights), image_size)
            reports.append(evaluate(imnet, images, labels, folds, cfg, device, "imagenet"))
    return reports


def write_submission(names: list[str], probs: np.ndarray, path) -> None:
    """DRAC22 Task 3 submission: `case,class,P0,P1,P2`, one row per test image in name order."""
    from .config import atomic_write_text

    probs = probs / probs.sum(1, keepdims=True)
    lines = ["case,class,P0,P1,P2"]
    for name, p in zip(names, probs):
        lines.append(f"{name},{int(p.argmax())},{p[0]:.6f},{p[1]:.6f},{p[2]:.6f}")
    atomic_write_text(path, "\n".join(lines) + "\n")
