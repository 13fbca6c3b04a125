"""Helpers the notebooks share: read a study's runs from MLflow into pandas, and draw the
comparison figures. Everything reads MLflow (and, for importances, the Optuna storage);
nothing here trains."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator, NullFormatter

from .best import best_path, read_best
from .reports import verdict_lines
from .study import load_study
from .tracking import download_artifact, find_parent_run, metric_histories, trial_runs

TERMS = ("loss", "invariance", "variance", "covariance")
MAIN_PARAMS = ("optim.lr", "data.batch_size", "model.expander_hidden", "optim.weight_decay", "data.image_size")


def project_root() -> Path:
    """The project folder, whether a notebook runs from it or from notebooks/."""
    here = Path.cwd()
    return here.parent if here.name == "notebooks" else here


def default_tracking_uri() -> str:
    """MLflow's default store as the sweep used it: sqlite:///mlflow.db in the project folder."""
    return f"sqlite:///{project_root() / 'mlflow.db'}"


@dataclass(frozen=True)
class StudyFiles:
    """Where a study's results are, from its study file, wherever it lives: its name, the folder
    of its best file (`<study file's folder>/best/`) and its output folder (`<out>/<name>`: the
    embedded journal, folds, timings)."""

    name: str
    folder: Path
    out_dir: Path
    searched: tuple[str, ...]


def study_files(study_file: str | Path, out: str | Path = "runs") -> StudyFiles:
    """The study file (a path, or a study name in experiments/) and the sweep's --out folder;
    relative paths are taken from the project folder (notebooks/ or the project itself)."""
    path = Path(study_file)
    if not path.suffix:
        path = project_root() / "experiments" / f"{path}.yaml"
    elif not path.is_absolute():
        path = project_root() / path
    spec = load_study(path)
    out = Path(out) if Path(out).is_absolute() else project_root() / out
    return StudyFiles(spec.name, path.parent, out / spec.name, tuple(d.key for d in spec.search))


def load_optuna(study: str | StudyFiles, storage: str | None = None):
    """The Optuna study (for importances and parallel coordinates): `storage` a database URL, or
    journal:PATH / a .journal file; default: the embedded journal in the study's output folder."""
    import optuna

    files = study if isinstance(study, StudyFiles) else None
    name = files.name if files else study
    if storage is None or storage.startswith("journal:") or storage.endswith(".journal"):
        path = (Path(storage.removeprefix("journal:")) if storage else
                (files.out_dir if files else project_root() / "runs" / name) / "optuna.journal")
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=storage)


def trials_frame(study: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """One row per trial run: run_id, trial, state, status, duration_s, params.*, metrics.*, tags.*."""
    df = trial_runs(study, tracking_uri)
    if df.empty:
        return df
    df["trial"] = df["tags.vicreg.trial"].astype(int)
    df["state"] = df["tags.state"]
    df["duration_s"] = (df["end_time"] - df["start_time"]).dt.total_seconds()
    for col in [c for c in df.columns if c.startswith("params.")]:
        df[col] = _numeric(df[col])
    return df.sort_values("trial").reset_index(drop=True)


def _numeric(col: pd.Series) -> pd.Series:
    converted = pd.to_numeric(col, errors="coerce")
    return converted if converted.notna().sum() == col.notna().sum() else col


def parent_run(study: str, tracking_uri: str | None = None):
    """The study's MLflow parent run (params, best value, verdict tags), or None."""
    return find_parent_run(study, tracking_uri)


def histories(run_ids: list[str], keys: tuple[str, ...] = TERMS, tracking_uri: str | None = None) -> pd.DataFrame:
    """Per-epoch metric values: columns run_id, key, step, value."""
    rows = metric_histories(run_ids, keys, tracking_uri)
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def plot_terms_by_group(df: pd.DataFrame, group: str, tracking_uri: str | None = None, title: str = ""):
    """Total loss and the three VICReg terms per epoch for any grouping (a column of `df`):
    one panel per term, mean line and min-max band over the runs of each group."""
    hist = histories(list(df["run_id"]), TERMS, tracking_uri).merge(df[["run_id", group]], on="run_id")
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    for ax, key in zip(axes, TERMS):
        sub = hist[hist.key == key]
        for name, g in sub.groupby(group):
            stats = g.groupby("step")["value"].agg(["mean", "min", "max"])
            label = f"{group.removeprefix('params.')} {name} (n={g.run_id.nunique()})"
            ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=label)
            ax.fill_between(stats.index, stats["min"], stats["max"], alpha=0.2)
        ax.set_title("total loss" if key == "loss" else key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_objective_vs_params(df: pd.DataFrame, metric: str = "metrics.kappa_mean",
                             params: tuple[str, ...] = MAIN_PARAMS):
    """The objective against each main hyperparameter (log x for lr and weight decay)."""
    fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.2), sharey=True)
    for ax, p in zip(np.atleast_1d(axes), params):
        col = f"params.{p}"
        ax.set_title(p)
        if col not in df or metric not in df:
            ax.text(0.5, 0.5, "not recorded", ha="center", transform=ax.transAxes)
            continue
        ok = df[df.state == "COMPLETE"]
        ax.scatter(ok[col], ok[metric], alpha=0.8)
        if p in ("optim.lr", "optim.weight_decay") and pd.api.types.is_numeric_dtype(ok[col]):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range labels minor ticks on top of each other
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(metric.removeprefix("metrics."))
    fig.tight_layout()
    return fig


def plot_score_distributions(frames: dict[str, pd.DataFrame], metric: str = "metrics.kappa_mean"):
    """Box plot of completed trials' scores, one box per study."""
    fig, ax = plt.subplots(figsize=(2.5 + 1.6 * len(frames), 3.6))
    data = [f.loc[f.state == "COMPLETE", metric].dropna().to_numpy() for f in frames.values()]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(frames) + 1), list(frames))
    ax.set_ylabel(metric.removeprefix("metrics."))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_vs_baseline(df: pd.DataFrame, metric: str = "kappa"):
    """VICReg's CV score (`metric`: the study's primary, kappa or f1) against the baselines'
    (the same for every trial), per completed trial."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ok = df[df.state == "COMPLETE"]
    ax.errorbar(ok.trial - 0.1, ok[f"metrics.{metric}_mean"], yerr=ok.get(f"metrics.{metric}_std"), fmt="o",
                label="VICReg")
    for shift, (name, marker) in enumerate((("random-init", "s"), ("raw-pixels", "^"), ("imagenet", "D")), start=1):
        if f"metrics.{name}_{metric}_mean" in ok:
            ax.errorbar(ok.trial + 0.1 * shift, ok[f"metrics.{name}_{metric}_mean"],
                        yerr=ok.get(f"metrics.{name}_{metric}_std"), fmt=marker, label=name)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered, not measured
    ax.set_ylabel(f"CV {metric} (mean +- std over folds)")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def show_artifact_png(run_id: str, path: str, tracking_uri: str | None = None, title: str = ""):
    """Download a PNG artifact of a run and draw it as a figure; None (and one line saying so)
    when the run has no such artifact (a study with log_plots: false)."""
    local = download_artifact(run_id, path, tracking_uri)
    if local is None:
        print(f"{title or path}: not logged for this run (the study sets log_plots: false)")
        return None
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.imshow(plt.imread(local))
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def best_configs(study: str, experiments: str | Path = "experiments") -> pd.DataFrame:
    """experiments/best/<study>.yaml as a table (rank, trial, value, scores, params)."""
    doc = _best_doc(study, experiments)
    if not doc:
        return pd.DataFrame()
    return pd.DataFrame([{k: v for k, v in e.items() if k not in ("config", "params")} | e["params"]
                         for e in doc["top"]])


def _best_doc(study: str, experiments: str | Path) -> dict:
    """The study's best file (sweeps/best.py's path rule; `experiments`: the study files' folder)."""
    return read_best(best_path(experiments, study)) or {}


def primary(study: str, experiments: str | Path = "experiments") -> str:
    """The study's primary score as its best file says: kappa (graded labels) or f1."""
    return _best_doc(study, experiments).get("primary", "kappa")


def confirmed_table(study: str, experiments: str | Path = "experiments") -> pd.DataFrame:
    """The confirm stage's ranking: per configuration, VICReg's and each baseline's CV,
    pooled and hold-out primary score (kappa, or f1 for unordered classes; mean and std over
    seeds). Empty before a confirm stage."""
    rows = []
    for e in _best_doc(study, experiments).get("confirmed") or []:
        row = {"rank": e["rank"], "trial": e["trial"], "seeds": e["seeds"]}
        m = e.get("metric", "kappa")
        for label, sc in e["scores"].items():
            for key in (f"cv_{m}", f"cv_{m}_std", f"pooled_{m}", f"holdout_{m}", f"holdout_{m}_std"):
                row[f"{label} {key}"] = sc.get(key)
        rows.append(row | e["params"])
    return pd.DataFrame(rows)


def verdict(study: str, experiments: str | Path = "experiments") -> list[str]:
    """The confirmed best's verdicts (on the hold-out, the headline; then on the selection
    folds, optimistic), what pretraining saw, and the number to quote (as --best prints them)."""
    doc = _best_doc(study, experiments)
    if not doc.get("confirmed"):
        return [f"not confirmed yet: vicreg-sweep --study {study} --confirm"]
    return verdict_lines(doc)
