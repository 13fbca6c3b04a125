"""The cheap probe a sweep prunes on: a ridge classifier on frozen features of at most
`probe_max_images` stratified CV images, scored per fold."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import RidgeClassifier
from sklearn.metrics import (
    cohen_kappa_score,
    f1_score,
)
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..data import HOLDOUT
from .features import cv_stats, extract_features

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
