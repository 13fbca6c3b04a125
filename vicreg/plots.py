"""PNG figures for runs: loss terms (the original report's figures 4-5), confusion matrix, train/val curves."""

from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure

# Figures are built with matplotlib's object API (no pyplot): no global state, no display,
# safe in worker processes, and cheaper than pyplot's figure manager.

GRADES = ("0 Normal", "1 NPDR", "2 PDR")


def plot_loss_terms(history: list[dict], path: str | os.PathLike, title: str = "") -> None:
    """Total VICReg loss and its three terms per epoch, one panel each."""
    fig = Figure(figsize=(16, 3.4))
    axes = fig.subplots(1, 4)
    epochs = [h["epoch"] for h in history]
    for ax, key in zip(axes, ("loss", "invariance", "variance", "covariance")):
        ax.plot(epochs, [h[key] for h in history], marker="o", ms=3)
        ax.set_title(key if key != "loss" else "total loss")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=72)


def plot_confusion(matrix: np.ndarray, path: str | os.PathLike, title: str = "",
                   classes: list[str] | None = None) -> None:
    """Summed confusion matrix over the folds (rows: true class, columns: predicted); `classes`
    names them (default: DRAC22's grades for 3 classes, else the indices)."""
    n = matrix.shape[0]
    names = classes or (GRADES if n == 3 else [str(i) for i in range(n)])
    fig = Figure(figsize=(1.2 * n + 2, 1.2 * n + 1.5))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    ax.set_xticks(range(n), names, rotation=30)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=72)


def plot_curves(fold_curves: list[list[dict]], path: str | os.PathLike, title: str = "", metric: str = "kappa") -> None:
    """Train/validation accuracy, loss and the primary score (`metric`) per epoch for every fold
    (the original report's figures 7-8)."""
    fig = Figure(figsize=(14, 3.6))
    axes = fig.subplots(1, 3)
    for k, curves in enumerate(fold_curves):
        if not curves:
            continue
        ep = [c["epoch"] for c in curves]
        for ax, key in zip(axes, ("accuracy", "loss")):
            line, = ax.plot(ep, [c[f"train_{key}"] for c in curves], alpha=0.8, label=f"fold {k} train")
            ax.plot(ep, [c[f"val_{key}"] for c in curves], ls="--", color=line.get_color(),
                    label=f"fold {k} val")
        axes[2].plot(ep, [c.get(f"val_{metric}", float("nan")) for c in curves], label=f"fold {k}")
    for ax, name in zip(axes, ("accuracy", "cross-entropy", f"validation {metric}")):
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=72)


def save_report_plots(report, folder: str | os.PathLike, metric: str = "kappa",
                      classes: list[str] | None = None) -> list[str]:
    """Confusion matrix and train/val curves of an EvalReport as PNGs in `folder`, titled with
    the primary score `metric`; returns paths."""
    os.makedirs(folder, exist_ok=True)
    title = f"{report.label} ({report.protocol}), {metric} {report.summary[f'{metric}_mean']:.3f}"
    paths = [os.path.join(folder, f"{report.label}_confusion.png"),
             os.path.join(folder, f"{report.label}_curves.png")]
    plot_confusion(report.confusion, paths[0], title, classes)
    plot_curves([f.curves for f in report.folds], paths[1], title, metric)
    return paths
