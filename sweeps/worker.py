"""The worker loop (ask -> objective -> tell), stale-trial recovery, and the best-configs file.

Several workers (processes, or machines with --storage) share one Optuna study. A worker
claims its next trial under a lock so that the study stops at exactly `--trials`
finished trials (COMPLETE or PRUNED); failed trials do not count and are retried.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import yaml

# What study.optimize uses for heartbeats; we run the ask/tell loop ourselves.
from optuna.storages._heartbeat import get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import TrialState

from vicreg.config import unflatten
from vicreg.io import atomic_write

from .objective import Preempted, SweepContext, check_interrupted, objective
from .storage import claim_lock, heartbeats_trustworthy
from .study import Study, config_values
from .tracking import PARENT_ATTR, Tracking

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
_CLOSED: set[int] = set()  # heartbeat-failed trials whose MLflow runs this process has checked


class SweepStopped(RuntimeError):
    """The sweep stopped on purpose (too many consecutive failures); the message says why."""


def _alive(pid: int) -> bool:
    """Is process `pid` running? A killed worker not yet reaped by its parent is a zombie: dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def fail_stale(study: optuna.Study, tracking: Tracking | None) -> list[int]:
    """RUNNING trials whose worker on this host is gone (kill -9): mark FAIL, close their
    MLflow runs as FAILED, and enqueue the same parameters again. Returns their numbers."""
    host, stale = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host", host) != host:
            continue  # another machine's trial: the RDB heartbeat handles those
        pid = t.user_attrs.get("pid")
        if pid is not None and _alive(int(pid)):
            continue
        study._storage.set_trial_user_attr(t._trial_id, "reason", "worker died (stale trial)")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if tracking is not None:
            tracking.close_stale(study.study_name, t.number)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        stale.append(t.number)
    if is_heartbeat_enabled(study._storage) and heartbeats_trustworthy(study):
        # Other machines' dead workers: their heartbeats stopped. Optuna fails those trials and
        # its RetryHeartbeatStaleTrialCallback re-enqueues them; we close their MLflow runs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if ("reason" not in t.user_attrs and tracking is not None and t.user_attrs.get("mlflow_run_id")
                    and t.number not in _CLOSED):
                _CLOSED.add(t.number)
                if tracking.close_stale(study.study_name, t.number):
                    stale.append(t.number)
    return stale


def counts(study: optuna.Study) -> dict[str, int]:
    out = {"done": 0, "running": 0, "failed": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state in DONE:
            out["done"] += 1
        elif t.state == TrialState.RUNNING:
            out["running"] += 1
        elif t.state == TrialState.FAIL:
            out["failed"] += 1
    return out


def _tell(study: optuna.Study, trial: optuna.Trial, value: float | None = None,
          state: TrialState | None = None) -> optuna.trial.FrozenTrial:
    """study.tell, tolerating samplers that call study.stop() (GridSampler once the grid is
    used up), which Optuna only allows inside study.optimize. The trial's state is stored
    before that call (Optuna's _tell sets it in a finally), and our loop stops on its own count."""
    try:
        return study.tell(trial, value, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker failed this trial while it ran: its heartbeats could not be written
        # for longer than the grace period. The retry it enqueued will run the parameters again.
        print(f"trial {trial.number}: already marked failed by another worker (its heartbeat lapsed); "
              f"result not recorded, its retry runs instead", flush=True)
        return study._storage.get_trial(trial._trial_id)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise
        return study._storage.get_trial(trial._trial_id)


def _record_timing(ctx: SweepContext, frozen: optuna.trial.FrozenTrial, t0: float, claimed: float,
                   mlflow0: float) -> None:
    """One line per trial in out_dir/timings.jsonl: where its wall time went (seconds).
    'storage' is the rest: Optuna's storage calls, the sampler, and the claim's bookkeeping."""
    total = time.perf_counter() - t0
    mlflow = ctx.tracking.seconds - mlflow0 if ctx.tracking is not None else 0.0
    row = {"trial": frozen.number, "state": frozen.state.name, "worker": ctx.worker, "host": socket.gethostname(),
           "total": total, "lock_wait": claimed - t0, "mlflow": mlflow, "work": ctx.work_s,
           "storage": max(0.0, total - (claimed - t0) - mlflow - ctx.work_s)}
    # One short O_APPEND write per line: lines from concurrent workers do not interleave.
    with open(ctx.out_dir / "timings.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def run_worker(study: optuna.Study, ctx: SweepContext, target: int, deadline: float | None = None,
               on_trial_end: Callable[[optuna.trial.FrozenTrial], None] | None = None,
               max_time_end: float | None = None) -> None:
    """Ask, run and tell trials until the study has `target` finished trials. With
    `max_time_end` (--max-time), no trial starts that would not fit before it, judged by the
    mean of this worker's trials so far (the trial in flight at the limit is preempted)."""
    # We run the heartbeat thread ourselves (below), which Optuna cannot see from ask().
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    consecutive, durations = 0, []
    while deadline is None or time.time() < deadline:
        check_interrupted()
        if max_time_end is not None and durations:
            left, need = max_time_end - time.time(), sum(durations) / len(durations)
            if need > left:
                print(f"--max-time: {left:.0f} s left, a trial takes about {need:.0f} s here; this worker "
                      f"starts no more trials", flush=True)
                return
        t0 = time.perf_counter()
        mlflow0 = ctx.tracking.seconds if ctx.tracking is not None else 0.0
        with claim_lock(study, ctx.out_dir):
            claimed = time.perf_counter()
            fail_stale(study, ctx.tracking)
            c = counts(study)
            if c["done"] >= target:
                return
            wait = c["done"] + c["running"] >= target
            if not wait:
                trial = study.ask()
                trial.set_user_attr("pid", os.getpid())
                trial.set_user_attr("host", socket.gethostname())
                trial.set_user_attr("worker", ctx.worker)
                trial.set_user_attr("cuda_visible_devices", os.environ.get("CUDA_VISIBLE_DEVICES"))
        if wait:  # the target is covered by running trials; stay in case one of them dies
            time.sleep(1.0)
            continue
        ctx.work_s = 0.0
        try:
            # Heartbeats (RDB storage only; a no-op for the journal) mark the trial alive.
            with get_heartbeat_thread(trial._trial_id, study._storage):
                value = objective(trial, ctx)
            frozen = _tell(study, trial, value)
            consecutive = 0
            if frozen.state == TrialState.COMPLETE and not ctx.dry_run:  # a dry run leaves no best file
                record_best(study, ctx.study, ctx.tracking, frozen, ctx.out_dir)
        except optuna.TrialPruned:
            frozen = _tell(study, trial, state=TrialState.PRUNED)
            consecutive = 0
        except KeyboardInterrupt as e:
            # Ctrl-C, SIGTERM or --max-time: failed, and retried on the next start, where it
            # resumes from its last checkpoint.
            reason = e.reason if isinstance(e, Preempted) else "interrupted (Ctrl-C)"
            study._storage.set_trial_user_attr(trial._trial_id, "reason", reason)
            _tell(study, trial, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        except Exception as e:  # noqa: BLE001 - recorded on the trial and in MLflow
            frozen = _tell(study, trial, state=TrialState.FAIL)
            consecutive += 1
            print(f"trial {trial.number} failed: {trial.user_attrs.get('reason', e)}", flush=True)
            if consecutive >= ctx.study.max_consecutive_failures:
                raise SweepStopped(f"stopping: {consecutive} consecutive trials failed (last: "
                                   f"{trial.user_attrs.get('reason', e)}); see the FAILED runs' "
                                   f"traceback.txt in MLflow") from e
        _record_timing(ctx, frozen, t0, claimed, mlflow0)
        durations.append(time.perf_counter() - t0)
        if on_trial_end is not None:
            on_trial_end(frozen)


def timing_summary(path: Path, offset: int = 0) -> str | None:
    """'per trial (mean of N, W workers): ...' from the timings.jsonl lines after `offset` bytes."""
    if not path.is_file():
        return None
    with open(path) as f:
        f.seek(offset)
        rows = []
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a killed worker: timings are informative only
    if not rows:
        return None

    def ms(key: str) -> float:
        return 1000 * sum(r[key] for r in rows) / len(rows)

    workers = len({(r["host"], r["worker"]) for r in rows})
    storage = sorted(r["storage"] for r in rows)
    p95 = 1000 * storage[min(len(storage) - 1, int(0.95 * len(storage)))]
    return (f"time per trial (mean of {len(rows)} trials, {workers} worker{'s' * (workers > 1)}): "
            f"{ms('total'):.0f} ms = training+evaluation {ms('work'):.0f} + MLflow {ms('mlflow'):.0f} + "
            f"Optuna storage+sampler {ms('storage'):.0f} (p95 {p95:.0f}) + waiting for the claim lock "
            f"{ms('lock_wait'):.0f}")


# --- best configurations -------------------------------------------------------------


def best_path(spec: Study) -> Path:
    return spec.path.parent / "best" / f"{spec.name}.yaml"


def top_trials(study: optuna.Study, spec: Study, k: int | None = None) -> list[optuna.trial.FrozenTrial]:
    """The best `k` (default: the study's top_k) COMPLETE trials by the objective (CV folds only)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: t.value, reverse=spec.direction == "maximize")[:spec.top_k if k is None else k]


_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's: ~30x faster on the full configs


QUOTE = ("quote the confirmed best's hold-out kappa: images that no selection (epochs, pruning, the sampler, "
         "ranking) saw, scored by a configuration pretrained again with several seeds. Trial values are CV "
         "scores selected on the folds they are measured on, and read high.")


def record_best(study: optuna.Study, spec: Study, tracking: Tracking | None,
                new: optuna.trial.FrozenTrial | None = None, out_dir: Path | None = None) -> None:
    """Rewrite experiments/best/<study>.yaml (atomically) and the parent run's summary, when
    the `new` trial entered the top k (always when new is None or the file is missing).
    With a confirm stage stored in `out_dir`, its ranking comes first and picks the best config."""
    from .confirm import load_confirmed

    top = top_trials(study, spec)
    path = best_path(spec)
    if not top or (new is not None and path.is_file() and new.number not in {t.number for t in top}):
        return
    config_path = path.with_name(f"{spec.name}.best-config.yaml")
    entries: list[dict[str, Any]] = []
    for rank, t in enumerate(top, start=1):
        s = t.user_attrs.get("scores", {})
        entries.append({
            "rank": rank, "trial": t.number, "value": t.value, "metric": spec.metric,
            "kappa": f"{s.get('kappa_mean', float('nan')):.4f} +- {s.get('kappa_std', float('nan')):.4f}",
            "kappa_pooled": s.get("kappa_pooled"),
            # the same folds and head seed, no pretraining: what each trial's CV kappa is read against
            "baselines_cv_kappa": {k.removesuffix("_kappa_mean"): v for k, v in s.items()
                                   if k.endswith("_kappa_mean") and k != "kappa_mean"},
            "accuracy": f"{s.get('accuracy_mean', float('nan')):.4f} +- {s.get('accuracy_std', float('nan')):.4f}",
            "auc": f"{s.get('auc_mean', float('nan')):.4f} +- {s.get('auc_std', float('nan')):.4f}",
            "params": config_values(t.params), "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "config": unflatten(t.user_attrs.get("config", {})),
        })
    confirmed = load_confirmed(out_dir) if out_dir is not None else None
    ranked = confirmed["ranked"] if confirmed else []
    doc = {"study": spec.name, "metric": spec.metric, "direction": spec.direction,
           "updated": time.strftime("%Y-%m-%d %H:%M:%S"), "rerun": rerun_command(spec), "quote": QUOTE,
           "confirmed": [{k: v for k, v in e.items() if k != "config"} for e in ranked],
           "confirm_seeds": confirmed["seeds"] if confirmed else 0,
           "verdict": [v["line"] for v in ranked[0]["verdicts"]] if ranked else [],
           "top": entries}
    best_config = ranked[0]["config"] if ranked else entries[0]["config"]
    atomic_write(config_path, yaml.dump(best_config, Dumper=_DUMPER, sort_keys=False))
    atomic_write(path, yaml.dump(doc, Dumper=_DUMPER, sort_keys=False))
    parent = study.user_attrs.get(PARENT_ATTR)
    if tracking is not None and parent:
        best = top[0]
        n_done = counts(study)["done"]
        tracking.log_metrics(parent, {"best_value": best.value, "completed_trials": n_done}, step=n_done)
        tracking.set_tags(parent, {"best_trial": best.number,
                                   **{f"best.{k}": v for k, v in config_values(best.params).items()}})
        keys = list(config_values(best.params))
        rows = ["rank,trial,value,kappa,accuracy,auc,mlflow_run_id," + ",".join(keys)]
        for e in entries:
            rows.append(",".join(str(x) for x in [e["rank"], e["trial"], e["value"], e["kappa"], e["accuracy"],
                                                   e["auc"], e["mlflow_run_id"],
                                                   *[e["params"].get(k) for k in keys]]))
        topk = path.with_name(f"{spec.name}.top{spec.top_k}.csv")
        atomic_write(topk, "\n".join(rows) + "\n")
        tracking.log_artifacts(parent, [topk])


def rerun_command(spec: Study) -> str:
    config = best_path(spec).with_name(f"{spec.name}.best-config.yaml")
    try:
        config = config.relative_to(Path.cwd())
    except ValueError:
        pass
    return f"python -m vicreg pretrain --config {config} --set train.checkpoint_dir=runs/{spec.name}-best"
