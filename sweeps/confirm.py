"""Confirm before calling a configuration best.

A sweep's winner is the best of many noisy draws, chosen on the CV folds it is scored on:
its score is biased upward twice. When a study ends (and on demand, `--confirm`), its top-k
configurations are pretrained again from scratch with N fresh seeds (confirm_seeds: never a
trial's seed, so no confirm run replays the selected draw), pretraining and head alike,
scored on the CV folds and, for the first and only time, on the hold-out, against the
baselines under the same seeds. The best file then ranks by the confirmed CV mean (a
configuration with a diverged seed after every one whose seeds all finished).

The headline (the primary verdict, the hold-out verdicts and the number to quote,
vicreg/verdict.py) comes from seeds that chose nothing. With one configuration confirmed,
those are its confirm seeds. With several, ranking them on their confirm seeds is a
selection, and a seed's luck is shared by its CV and hold-out scores, so the winner's
hold-out on the same seeds would read high (the winner's curse; tests/sweeps/test_confirm.py shows
it by simulation). The winner is therefore pretrained once more on a disjoint block of seeds
(1500.. for trial seed 0), and the headline is quoted on that block alone.

Each confirm run is an MLflow child run tagged `stage=confirm` under the study's parent;
its result is stored as runs/<study>/confirm/trial<N>-seed<S>.json, so an interrupted
confirm stage resumes where it stopped (a run killed mid-pretraining resumes from its
checkpoint), and confirm runs are not Optuna trials: they do not count towards --trials.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from vicreg import checkpoint
from vicreg.checkpoint import encoder_from_state
from vicreg.config import Config, ConfigError, config_from_dict, flatten, primary_metric, set_key, unflatten
from vicreg.data import pretrain_selection
from vicreg.data.rows import Rows
from vicreg.errors import CheckpointError
from vicreg.evaluate import EvalReport, mean_std
from vicreg.io import atomic_write, file_lock, read_json
from vicreg.train import data_placement, pretrain, resolve_device
from vicreg.verdict import Verdict, cv_verdicts, holdout_score, holdout_verdicts, more_seeds, primary

from .best import CONFIRMED_FILE, top_trials, trial_metric
from .context import SweepContext
from .objective import trial_summary
from .outcome import OUTCOMES
from .signals import check_interrupted
from .space import config_values
from .tracking import Run, best_version, close_stale_confirm, register_encoder, start_run, tracked

CONFIRM_SEED_BLOCK = 1000  # confirm seeds start at the next multiple of this above the trial's seed
QUOTE_OFFSET = 500  # the winner's quote seeds: this far into the block, disjoint for N < 500


def confirm_seeds(trial_seed: int, n: int, quote: bool = False) -> list[int]:
    """The N confirm seeds of a configuration whose trial ran with `trial_seed`: 1000..1000+N-1
    for the usual trial seed 0, always a block above it, so none equals it (reusing the
    selection seed reproduces the selected draw, winner's curse included). `quote`: the
    winner's seeds when several configurations were ranked, 1500..1500+N-1."""
    base = CONFIRM_SEED_BLOCK * (trial_seed // CONFIRM_SEED_BLOCK + 1) + (QUOTE_OFFSET if quote else 0)
    return [base + i for i in range(n)]


def trial_seed(trial: optuna.trial.FrozenTrial) -> int:
    return int(trial.user_attrs["config"].get("train.seed", 0))


def confirm_config(ctx: SweepContext, trial: optuna.trial.FrozenTrial, seed: int) -> Config:
    """The trial's resolved config with this run's overrides and seed, checkpointed under
    out_dir/confirm so that a killed run resumes. The paths it writes (the decode cache, the
    folds file) come from the study file and the command line, never from the stored trial:
    the storage is data, and must not choose where this process writes."""
    raw = unflatten(trial.user_attrs["config"])
    base = ctx.spec.config({}, ctx.overrides).data
    sets = {"data.cache_dir": base.cache_dir, "data.folds_file": base.folds_file, **ctx.overrides,
            "train.seed": seed, "eval.seed": seed, "train.progress": ctx.progress,
            "train.checkpoint_dir": str(ctx.out_dir / "confirm" / f"ckpt-trial{trial.number:04d}-seed{seed}")}
    for key, value in sets.items():
        set_key(raw, key, value)
    return config_from_dict(raw, source=f"trial {trial.number} (confirm)")


def _result_path(ctx: SweepContext, trial: int, seed: int) -> Path:
    return ctx.out_dir / "confirm" / f"trial{trial:04d}-seed{seed}.json"


def confirm_run(ctx: SweepContext, trial: optuna.trial.FrozenTrial, seed: int) -> dict:
    """Pretrain one (configuration, seed) from scratch and score it with the hold-out;
    store and return {"trial", "seed", "status", "run_id", "reports": [vicreg, baselines...]}."""
    cfg = confirm_config(ctx, trial, seed)
    device = resolve_device(cfg.train.device)
    run = Run(None)
    if ctx.tracking is not None:
        tags = {"vicreg.study": ctx.spec.name, "vicreg.role": "confirm", "stage": "confirm",
                "confirm_of_trial": str(trial.number), "seed": str(seed), "git_commit": ctx.commit,
                "dataset": cfg.data.dataset}
        params = {**config_values(trial.params), "train.seed": seed, "eval.seed": seed,
                  "trial_seed": trial_seed(trial)}
        run = start_run(ctx.tracking, ctx.parent_id, f"confirm trial-{trial.number:03d} seed {seed}", cfg,
                                     params, tags)
    first = confirm_seeds(trial_seed(trial), 1)[0]
    with tracked(run, interrupted="interrupted (Ctrl-C); resumes on the next --confirm"):
        data, folds = ctx.datasets(cfg), ctx.folds(cfg)
        images, seen = pretrain_selection(data, folds, cfg.data)
        run.log_inputs(data, folds, seen, data_placement(cfg, images, ctx.per_gpu))
        with run.monitor(ctx.spec.system_metrics_interval_s):
            result = pretrain(cfg, images, [lambda report: check_interrupted(), run.log_epoch], ctx.per_gpu)
            reports = [] if result.status == "diverged" else ctx.score(cfg, result.model.encoder, data, folds,
                                                                         device, holdout=True)
        out = {"trial": trial.number, "seed": seed, "status": result.status, "run_id": run.run_id,
               "metric": primary_metric(cfg.data),
               "reports": [r.to_dict() for r in reports], "pretrain_images": seen}
        if result.status == "diverged":  # not an Optuna trial: FAILED/DIVERGED, not pruned (sweeps/outcome.py)
            o = OUTCOMES["diverged (confirm run)"]
            run.end(o.mlflow_status, o.state_tag, {"reason": result.reason})
        else:
            # The Model Registry's candidate (register_best) is the first confirm seed's encoder,
            # fixed before any score is seen: never the seed with the best hold-out score.
            if run.tracking is not None and seed == first:
                _save_encoder(ctx, trial.number, cfg, result.model.encoder, images)
            run.complete(cfg, result, reports, trial_summary(reports, result, primary_metric(cfg.data)),
                         ctx.spec.log_plots,
                         ctx.spec.log_checkpoint)
    atomic_write(_result_path(ctx, trial.number, seed), json.dumps(out))
    shutil.rmtree(cfg.train.checkpoint_dir, ignore_errors=True)  # runs/ must not fill the disk
    return out


def _encoder_path(ctx: SweepContext, trial: int) -> Path:
    return ctx.out_dir / "confirm" / f"encoder-trial{trial:04d}-first-seed.pt"


def _save_encoder(ctx: SweepContext, trial: int, cfg: Config, encoder: torch.nn.Module,
                  images: torch.Tensor | Rows) -> None:
    """The first confirm seed's encoder with its run's resolved config (the registry model's
    weights file, the format of a sweep run's checkpoint/encoder.pt) and a 2-image input
    example normalised as the features are, kept until the ranking says which is best."""
    from vicreg.augment import channel_stats, normalise
    from vicreg.data.rows import take

    mean, std = channel_stats(images)
    example = normalise(take(images, torch.arange(2)), mean, std).cpu()
    checkpoint.save(_encoder_path(ctx, trial), {"encoder": {k: v.cpu() for k, v in encoder.state_dict().items()},
                                                "config": flatten(cfg), "example": example})


def register_best(ctx: SweepContext, ranked: list[dict]) -> None:
    """When the confirmed best configuration changed, its first confirm seed's encoder goes to the Model
    Registry as `vicreg-<study>` with the alias `best` (Tracking.register_encoder); the kept
    encoder files are removed either way (runs/ must not fill the disk)."""
    tr = ctx.tracking
    try:
        if tr is None or not ranked or not ranked[0]["mlflow_run_ids"]:
            return
        best, name = ranked[0], f"vicreg-{ctx.spec.name}"
        current = best_version(tr, name)
        if current is not None and current.get("vicreg.trial") == str(best["trial"]):
            return  # the same configuration: its version stays
        path = _encoder_path(ctx, best["trial"])
        if not path.is_file():
            print(f"model registry: the encoder of trial {best['trial']} seed {best['seed_values'][0]} is not "
                  f"kept here ({path}); not registered")
            return
        try:
            state = checkpoint.load(path)
            raw, encoder = encoder_from_state(state, path)
            example = state["example"]
        except (CheckpointError, ConfigError, KeyError) as e:  # a damaged or crafted file: one line, not a traceback
            print(f"model registry: {e}; not registered")
            return
        with torch.no_grad():
            features = encoder(example)
        vic, m = best["scores"].get("vicreg", {}), best.get("metric", "kappa")
        tags = {"vicreg.study": ctx.spec.name, "vicreg.trial": str(best["trial"]),
                "vicreg.seed": str(best["seed_values"][0]), "metric": m,
                f"confirmed_cv_{m}": f"{vic.get(f'cv_{m}', float('nan')):.4f}",
                f"confirmed_holdout_{m}": f"{vic.get(f'holdout_{m}', float('nan')):.4f}",
                "image_size": str(raw["data"]["image_size"]), "in_channels": str(raw["model"]["in_channels"])}
        register_encoder(tr, best["mlflow_run_ids"][0], name, path, example.numpy(), features.numpy(), tags)
    finally:
        for p in (ctx.out_dir / "confirm").glob("encoder-trial*-first-seed.pt"):
            p.unlink(missing_ok=True)


def _read_result(path: Path) -> dict | None:
    """A stored (configuration, seed) result; a damaged one is run again (one warning)."""
    try:
        return read_json(path)
    except ValueError as e:
        print(f"warning: {e}; that run is done again", flush=True)
        return None


SCORES = {"cv_kappa": "kappa_mean", "pooled_kappa": "kappa_pooled", "holdout_kappa": "kappa_holdout",
          "cv_f1": "f1_mean", "pooled_f1": "f1_pooled", "holdout_f1": "f1_holdout",
          "holdout_accuracy": "accuracy_holdout"}



def summarise(trial: optuna.trial.FrozenTrial, runs: list[dict]) -> dict:
    """One configuration's confirmed scores over its seeds, per model (vicreg and each
    baseline): {name: mean, name_std: std over seeds} for SCORES; and, over the seeds that
    finished, on the data's primary score (`metric`): the hold-out verdicts (`verdicts`), the
    primary verdict (`primary`), the hold-out score with its interval (`quote`), and the CV
    lines on the folds that selected it (`cv_verdicts`)."""
    metric = trial_metric(trial)
    ok = [r for r in runs if r["reports"]]
    entry: dict[str, Any] = {"trial": trial.number, "params": config_values(trial.params), "seeds": len(runs),
                             "seed_values": [r["seed"] for r in runs], "diverged_seeds": len(runs) - len(ok),
                             "trial_seed": trial_seed(trial), "trial_cv_value": trial.value,
                             "mlflow_run_ids": [r["run_id"] for r in runs], "scores": {}, "verdicts": [],
                             "cv_verdicts": [], "primary": None, "quote": None, "metric": metric,
                             "pretrain_images": runs[0].get("pretrain_images", {}) if runs else {}}
    by_label: dict[str, list[EvalReport]] = {}
    for r in ok:
        for d in r["reports"]:
            by_label.setdefault(d["label"], []).append(EvalReport.from_dict(d))
    for label, reps in by_label.items():
        stats = {}
        for name, key in SCORES.items():
            stats[name], stats[f"{name}_std"] = mean_std([r.summary.get(key) for r in reps])
        entry["scores"][label] = stats
    if "vicreg" in by_label:
        baselines = {k: v for k, v in by_label.items() if k != "vicreg"}
        verdicts = holdout_verdicts(by_label["vicreg"], baselines, metric, entry["diverged_seeds"])
        entry["verdicts"] = [v.as_dict() for v in verdicts]
        entry["primary"] = primary(verdicts)
        entry["quote"] = holdout_score(by_label["vicreg"], metric)
        entry["cv_verdicts"] = [v.as_dict() for v in cv_verdicts(by_label["vicreg"], baselines, metric=metric)]
    return entry


def headline(entry: dict, seeds: int) -> dict:
    """What the best file and the parent run lead with, from the entry of the seeds that chose
    nothing: its verdicts, primary verdict and quote, and what more seeds could change."""
    verdicts = [Verdict.from_dict(v) for v in entry["verdicts"]]
    return {"trial": entry["trial"], "seed_values": entry["seed_values"], "seeds": entry["seeds"],
            "diverged_seeds": entry["diverged_seeds"], "metric": entry["metric"], "scores": entry["scores"],
            "verdicts": entry["verdicts"], "cv_verdicts": entry["cv_verdicts"], "primary": entry["primary"],
            "quote": entry["quote"], "mlflow_run_ids": entry["mlflow_run_ids"],
            "more_seeds": [line for v in verdicts if (line := more_seeds(v, 2 * seeds))]}


def confirmed_cv(entry: dict) -> float:
    """The configuration's confirmed CV mean of its primary score (kappa, or f1)."""
    return entry["scores"].get("vicreg", {}).get(f"cv_{entry.get('metric', 'kappa')}", float("nan"))


def rank_key(entry: dict) -> tuple[bool, float]:
    """Configurations whose seeds all finished first, each group by confirmed CV score: one
    that diverged on 2 of 3 seeds is not ranked on its one survivor."""
    cv = confirmed_cv(entry)
    return entry["diverged_seeds"] > 0, -cv if math.isfinite(cv) else math.inf


def _runs(ctx: SweepContext, t: optuna.trial.FrozenTrial, seeds: list[int]) -> list[dict]:
    """The configuration's run for each seed: stored ones reused, the others run now."""
    runs = []
    for s in seeds:
        stored = _read_result(_result_path(ctx, t.number, s))
        if stored is not None:
            runs.append(stored)
            continue
        t0 = time.perf_counter()
        runs.append(confirm_run(ctx, t, s))
        print(f"confirm trial {t.number} seed {s}: {_line(runs[-1])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return runs


def run_confirm(study: optuna.Study, ctx: SweepContext, top_k: int, seeds: int) -> list[dict]:
    """Confirm the top-k configurations with `seeds` seeds each (resuming stored runs), rank
    them by confirmed CV score (primary), and with several, run the winner on its quote seeds
    (module docstring); write out_dir/confirmed.json (the ranking and the headline); return
    the ranking."""
    top = top_trials(study, ctx.spec, top_k)
    if not top or seeds < 1:
        return []
    (ctx.out_dir / "confirm").mkdir(parents=True, exist_ok=True)
    with file_lock(ctx.out_dir / "confirm.lock"):  # one confirmer at a time: RUNNING ones are dead
        if ctx.tracking is not None:
            close_stale_confirm(ctx.tracking, ctx.spec.name)
        ranked = [summarise(t, _runs(ctx, t, confirm_seeds(trial_seed(t), seeds)))
                  | {"config": unflatten(t.user_attrs["config"])} for t in top]
        ranked.sort(key=rank_key)
        quoted = ranked[0]
        if len(ranked) > 1:  # the winner of a ranking: quoted on seeds that did not rank it
            winner = next(t for t in top if t.number == ranked[0]["trial"])
            print(f"confirm: trial {winner.number} ranked first; its headline comes from {seeds} more seeds "
                  f"that ranked nothing", flush=True)
            quoted = summarise(winner, _runs(ctx, winner, confirm_seeds(trial_seed(winner), seeds, quote=True)))
    for rank, e in enumerate(ranked, start=1):
        e["rank"] = rank
    atomic_write(ctx.out_dir / CONFIRMED_FILE, json.dumps({"top_k": top_k, "seeds": seeds, "ranked": ranked,
                                                           "headline": headline(quoted, seeds)}))
    register_best(ctx, ranked)
    return ranked


def _line(run: dict) -> str:
    if not run["reports"]:
        return run["status"]
    s = EvalReport.from_dict(run["reports"][0]).summary
    m = "f1" if run.get("metric") == "f1" else "kappa"
    return f"CV {m} {s[f'{m}_mean']:.4f}, hold-out {m} {s.get(f'{m}_holdout', float('nan')):.4f}"
