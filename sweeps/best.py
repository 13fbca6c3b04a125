"""The best-configurations file: experiments/best/<study>.yaml, its best config beside it.

One path rule (best_path): the file lives in `best/` next to the study file, under the
study's name. The worker rewrites it when a trial enters the top k, the confirm stage when
it has ranked the confirmed configurations; `--best` prints it and the notebooks read it
(sweeps/analysis.py). Trial values in it are CV scores, selected on the folds they are
measured on; the confirmed hold-out score is the number to quote.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import yaml
from optuna.trial import TrialState

from vicreg.config import ConfigError, DataConfig, primary_metric, unflatten
from vicreg.io import atomic_write, csv_text, read_json
from vicreg.seen import pretrain_note

from .space import config_values
from .tracking import log_best

if TYPE_CHECKING:
    from .study import StudySpec
    from .tracking import Tracking


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: ~30x faster on the full configs

QUOTE = ("quote the primary verdict and the confirmed best's hold-out score with its interval: images that no "
         "selection (epochs, pruning, the sampler, ranking) saw, scored by a configuration pretrained again with "
         "seeds that chose nothing. Trial values and the CV lines are on the folds that chose the configuration, "
         "and read high.")


CONFIRMED_FILE = "confirmed.json"  # in runs/<study>/: the confirm stage's ranking (sweeps/confirm.py)


def load_confirmed(out_dir: Path) -> dict | None:
    """out_dir/confirmed.json, or None when no confirm stage has run."""
    try:
        return read_json(Path(out_dir) / CONFIRMED_FILE)
    except ValueError as e:
        raise ValueError(f"{e} (delete it and run --confirm again)") from None


def best_path(study_folder: str | Path, name: str) -> Path:
    """<the study file's folder>/best/<study name>.yaml: where it is written and read."""
    return Path(study_folder) / "best" / f"{name}.yaml"


def best_file(spec: StudySpec) -> Path:
    return best_path(spec.path.parent, spec.name)


def read_best(path: Path) -> dict[str, Any] | None:
    """The best file's content; None when there is none yet; a one-line ConfigError when damaged."""
    if not path.is_file():
        return None
    try:
        doc = yaml.safe_load(path.read_text())
        list(doc["top"][0]["params"])
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        raise ConfigError(f"{path}: cannot be parsed as a best-configurations file; delete it (the next "
                          f"trial or --confirm rewrites it)") from None
    return doc


def trial_metric(trial: optuna.trial.FrozenTrial) -> str:
    """The primary score of the data a trial ran on (vicreg.config.primary_metric): kappa for
    graded labels, f1 for unordered classes; read from its stored config."""
    flat = trial.user_attrs.get("config", {})
    return primary_metric(DataConfig(dataset=flat.get("data.dataset", "synthetic"), ordinal=flat.get("data.ordinal")))


def top_trials(study: optuna.Study, spec: StudySpec, k: int | None = None) -> list[optuna.trial.FrozenTrial]:
    """The best `k` (default: the study's best_file_trials) COMPLETE trials by the objective (CV folds only)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ranked = sorted(done, key=lambda t: t.value, reverse=spec.objective.direction == "maximize")
    return ranked[:spec.best_file_trials if k is None else k]


def record_best(study: optuna.Study, spec: StudySpec, tracking: Tracking | None, parent_id: str | None,
                new: optuna.trial.FrozenTrial | None = None, confirmed: dict | None = None) -> None:
    """Rewrite the best file and best config (atomically) and the parent run's summary, when
    the `new` trial entered the top k (always when new is None or the file is missing).
    With a confirm stage's result (`confirmed`), its ranking comes first and picks the best config."""
    top = top_trials(study, spec)
    path = best_file(spec)
    if not top or (new is not None and path.is_file() and new.number not in {t.number for t in top}):
        return
    entries: list[dict[str, Any]] = []
    m = trial_metric(top[0])  # the primary score: kappa, or f1 for unordered classes
    for rank, t in enumerate(top, start=1):
        s = t.user_attrs.get("scores", {})
        entries.append({
            "rank": rank, "trial": t.number, "value": t.value, "metric": spec.objective.metric,
            m: f"{s.get(f'{m}_mean', float('nan')):.4f} +- {s.get(f'{m}_std', float('nan')):.4f}",
            f"{m}_pooled": s.get(f"{m}_pooled"),
            # the same folds and head seed, no pretraining: what each trial's CV score is read against
            f"baselines_cv_{m}": {k.removesuffix(f"_{m}_mean"): v for k, v in s.items()
                                  if k.endswith(f"_{m}_mean") and k != f"{m}_mean"},
            "accuracy": f"{s.get('accuracy_mean', float('nan')):.4f} +- {s.get('accuracy_std', float('nan')):.4f}",
            "auc": f"{s.get('auc_mean', float('nan')):.4f} +- {s.get('auc_std', float('nan')):.4f}",
            "params": config_values(t.params), "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "config": unflatten(t.user_attrs.get("config", {})),
        })
    ranked = confirmed["ranked"] if confirmed else []
    head = (confirmed or {}).get("headline") or {}  # absent in a file written before the headline: rerun --confirm
    doc = {"study": spec.name, "metric": spec.objective.metric, "primary": m, "direction": spec.objective.direction,
           "updated": time.strftime("%Y-%m-%d %H:%M:%S"), "rerun": rerun_command(spec), "quote": QUOTE,
           "confirmed": [{k: v for k, v in e.items() if k != "config"} for e in ranked],
           "confirm_seeds": confirmed["seeds"] if confirmed else 0,
           "headline": {k: head[k] for k in ("trial", "seed_values", "seeds", "diverged_seeds") if k in head},
           "primary_verdict": (head.get("primary") or {}).get("line", ""),
           "verdict": [v["line"] for v in head.get("verdicts", [])],
           "cv_verdict": [v["line"] for v in head.get("cv_verdicts", [])],
           "quote_score": (head.get("quote") or {}).get("text", ""),
           "more_seeds": head.get("more_seeds", []),
           "pretraining_saw": pretrain_note(ranked[0].get("pretrain_images") or {}) if ranked else "",
           "top": entries}
    best_config = ranked[0]["config"] if ranked else entries[0]["config"]
    atomic_write(_config_path(spec), yaml.dump(best_config, Dumper=_DUMPER, sort_keys=False))
    atomic_write(path, yaml.dump(doc, Dumper=_DUMPER, sort_keys=False))
    if tracking is not None and parent_id:
        keys = list(config_values(top[0].params))
        rows = [["rank", "trial", "value", m, "accuracy", "auc", "mlflow_run_id", *keys]]
        rows += [[e["rank"], e["trial"], e["value"], e[m], e["accuracy"], e["auc"], e["mlflow_run_id"],
                  *[e["params"].get(k) for k in keys]] for e in entries]
        table = path.with_name(f"{spec.name}.top{spec.best_file_trials}.csv")
        atomic_write(table, csv_text(rows))
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        log_best(tracking, parent_id, top[0].value, done,
                          {"best_trial": top[0].number, **{f"best.{k}": v for k, v in entries[0]["params"].items()}},
                          table)


def _config_path(spec: StudySpec) -> Path:
    return best_file(spec).with_name(f"{spec.name}.best-config.yaml")


def rerun_command(spec: StudySpec) -> str:
    config = _config_path(spec)
    try:
        config = config.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"vicreg pretrain --config {config} --set train.checkpoint_dir=runs/{spec.name}-best"
