"""The worker: its loop (ask -> objective -> tell), stale-trial recovery, and its entry point.

Several workers (processes, or machines with --storage) share one Optuna study. A worker
claims its next trial under a lock so that the study stops at exactly `--trials`
finished trials (COMPLETE or PRUNED); failed trials do not count and are retried.

`vicreg-sweep --workers N` (or --gpus) starts N of these:

    python -m sweeps.worker --config STUDY.yaml --trials 20 --out runs/STUDY --index 0 --workers 2

Every setting is an argument except the storage and tracking URLs, which travel in the
environment (VICREG_SWEEP_STORAGE, VICREG_SWEEP_TRACKING_URI) so that a database password
stays out of `ps`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import TrialState

from vicreg.config import ConfigError
from vicreg.errors import first_line

from . import optuna_compat
from .best import load_confirmed, record_best
from .cli import load_spec, overrides_from, start_deadline
from .context import SweepContext, worker_threads
from .gpu_share import gpu_slot, set_memory_share
from .group import TrialGroup, follow, join
from .objective import dry_run_objective, objective
from .outcome import RankLost, SweepStopped, outcome_of
from .signals import Preempted, check_interrupted, handlers
from .storage import StorageUnavailable, claim_lock, heartbeats_trustworthy, open_study
from .study import check_init
from .tracking import PARENT_ATTR, Tracking, TrackingUnavailable, close_stale

STORAGE_ENV = "VICREG_SWEEP_STORAGE"
TRACKING_ENV = "VICREG_SWEEP_TRACKING_URI"  # run.py's --tracking-uri, kept off the command line (ps)
Objective = Callable[[optuna.Trial, SweepContext], float]

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
_CLOSED: set[int] = set()  # heartbeat-failed trials whose MLflow runs this process has checked


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
        optuna_compat.fail(study, t, "worker died (stale trial)")
        if tracking is not None:
            close_stale(tracking, study.study_name, t.number)
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        stale.append(t.number)
    if optuna_compat.heartbeat_enabled(study) and heartbeats_trustworthy(study):
        # Other machines' dead workers: their heartbeats stopped. Optuna fails those trials and
        # its RetryHeartbeatStaleTrialCallback re-enqueues them; we close their MLflow runs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            if ("reason" not in t.user_attrs and tracking is not None and t.user_attrs.get("mlflow_run_id")
                    and t.number not in _CLOSED):
                _CLOSED.add(t.number)
                if close_stale(tracking, study.study_name, t.number):
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
        return optuna_compat.stored_trial(study, trial)
    except RuntimeError as e:
        if not optuna_compat.stopped_outside_optimize(e):
            raise
        return optuna_compat.stored_trial(study, trial)


def _record_timing(ctx: SweepContext, frozen: optuna.trial.FrozenTrial, t0: float, claimed: float,
                   mlflow0: float) -> None:
    """One line per trial in out_dir/timings.jsonl: where its wall time went (seconds).
    'storage' is the rest: Optuna's storage calls, the sampler, and the claim's bookkeeping."""
    total = time.perf_counter() - t0
    mlflow = ctx.mlflow_s() - mlflow0
    row = {"trial": frozen.number, "state": frozen.state.name, "worker": ctx.worker, "host": socket.gethostname(),
           "total": total, "lock_wait": claimed - t0, "mlflow": mlflow, "work": ctx.work_s,
           "storage": max(0.0, total - (claimed - t0) - mlflow - ctx.work_s),
           # the work's parts: pretraining (its probe taken out), the probe, final scoring, baselines
           **{k: ctx.phases.get(k, 0.0) - (ctx.phases.get("probe", 0.0) if k == "pretrain" else 0.0)
              for k in ("pretrain", "probe", "score", "baselines")}}
    # One short O_APPEND write per line: lines from concurrent workers do not interleave.
    with open(ctx.out_dir / "timings.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def run_worker(study: optuna.Study, ctx: SweepContext, target: int, fn: Objective = objective,
               deadline: float | None = None, on_trial_end: Callable[[optuna.trial.FrozenTrial], None] | None = None,
               max_time_end: float | None = None) -> None:
    """Ask, run and tell trials of `fn` (objective, or dry_run_objective) until the study has
    `target` finished trials. With
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
        mlflow0 = ctx.mlflow_s()
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
        ctx.work_s, ctx.phases = 0.0, {}
        try:
            # Heartbeats (RDB storage only; a no-op for the journal) mark the trial alive. With
            # --per-gpu, the trial holds its GPU's slot: shared, or whole for an alone retry.
            alone = bool(trial.user_attrs.get("alone"))
            with optuna_compat.heartbeat(study, trial), gpu_slot(ctx.out_dir, ctx.per_gpu, alone):
                value = fn(trial, ctx)
            frozen = _tell(study, trial, value)
            consecutive = 0
        except (Exception, KeyboardInterrupt) as e:
            frozen, consecutive = _ended(study, ctx, trial, e, consecutive)
            # Ctrl-C, SIGTERM or --max-time stop this worker too, and so does a lost rank (its group is broken)
            if isinstance(e, (KeyboardInterrupt, RankLost)):
                raise
        if frozen.state == TrialState.COMPLETE and not ctx.dry_run:  # a dry run leaves no best file
            try:  # after the tell: a failure here must not tell the finished trial again (_ended)
                record_best(study, ctx.spec, ctx.tracking, ctx.parent_id, frozen, load_confirmed(ctx.out_dir))
            except (OSError, ValueError) as e:
                print(f"warning: the best file was not rewritten after trial {frozen.number} "
                      f"({first_line(e, with_type=True)}); the next trial or --confirm rewrites it", flush=True)
        _record_timing(ctx, frozen, t0, claimed, mlflow0)
        durations.append(time.perf_counter() - t0)
        if on_trial_end is not None:
            on_trial_end(frozen)


def _ended(study: optuna.Study, ctx: SweepContext, trial: optuna.Trial, e: BaseException,
           consecutive: int) -> tuple[optuna.trial.FrozenTrial, int]:
    """Record a trial that raised `e` as sweeps/outcome.py's table says: its Optuna state,
    whether it is enqueued again (its retry resumes from its last checkpoint; an out-of-memory
    trial packed on a GPU is retried once alone), and the count of consecutive failures, which
    stops the sweep at the study's max_consecutive_failures. Returns (trial, that count)."""
    o = outcome_of(e, packed=ctx.per_gpu > 1 and not trial.user_attrs.get("alone"))
    if isinstance(e, KeyboardInterrupt):  # the reason its MLflow run and its retry show
        optuna_compat.set_user_attr(study, trial, "reason", getattr(e, "reason", "interrupted (Ctrl-C)"))
    if o.retry == "alone, once":
        optuna_compat.set_user_attr(study, trial, "retried_alone", True)
    frozen = _tell(study, trial, state=TrialState[o.optuna_state])
    if o.retry != "no":
        alone = {"alone": True} if o.retry == "alone, once" else {}
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, **alone})
    if o.optuna_state == "FAIL" and not isinstance(e, KeyboardInterrupt):
        print(f"trial {trial.number} failed: {trial.user_attrs.get('reason', e)}", flush=True)
    if o.retry == "alone, once":
        print(f"trial {trial.number}: out of memory beside {ctx.per_gpu - 1} other trial(s) on its GPU; "
              f"retried once, alone on its GPU", flush=True)
    if not o.counts_as_failure:
        return frozen, 0 if o.optuna_state == "PRUNED" else consecutive
    consecutive += 1
    if consecutive >= ctx.spec.max_consecutive_failures:
        where = ("see the FAILED runs' traceback.txt in MLflow" if ctx.tracking is not None
                 else "each failure is printed above (--no-tracking: no traceback.txt is kept)")
        raise SweepStopped(f"stopping: {consecutive} consecutive trials failed (last: "
                           f"{trial.user_attrs.get('reason', e)}); {where}") from e
    return frozen, consecutive


# --- the worker process's entry point ------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sweeps.worker", description="One worker of a sweep (started by "
                                "sweeps/run.py); the storage URL is read from $" + STORAGE_ENV)
    p.add_argument("--config", required=True, help="the study file")
    p.add_argument("--trials", type=int, required=True, help="total finished trials wanted")
    p.add_argument("--out", required=True, help="the study's output folder")
    p.add_argument("--index", type=int, default=0, help="this worker's number (sampler seed offset, tags)")
    p.add_argument("--workers", type=int, default=1, help="workers on this machine (to share the CPU cores)")
    p.add_argument("--per-gpu", type=int, default=1, help="workers on this worker's GPU (its memory share)")
    p.add_argument("--tracking-uri")
    p.add_argument("--timeout", type=float)
    p.add_argument("--max-time", type=float)
    p.add_argument("--data-root")
    p.add_argument("--test-root")
    p.add_argument("--storage-wait", type=float, default=600.0)
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--no-tracking", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    return p.parse_args(argv)


def _follower(a: argparse.Namespace, spec, overrides: dict, group: TrialGroup) -> int:
    """A rank other than 0 of a --gpus-per-trial group: no storage, no tracking, only training."""
    worker_threads(a.workers)
    ctx = SweepContext(spec, Path(a.out), overrides, None, None, a.index, progress=False)
    try:
        return follow(ctx, group)
    except Exception as e:  # ends this rank; rank 0 records the trial (a lost rank)
        print(f"worker {a.index} rank {group.world.rank}: {first_line(e, with_type=True)}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    storage = os.environ.get(STORAGE_ENV) or None
    group: TrialGroup | None = None
    try:
        overrides = overrides_from(a.set, a.data_root, a.test_root)
        spec, _ = load_spec(a.config, a.dry_run).fixed(overrides)
        check_init(spec, overrides)
        # --gpus-per-trial: join this worker's process group (none with one process, or a dry run)
        group = None if a.dry_run else join(spec.config({}, overrides).train.device)
        if group is not None and not group.world.main:
            return _follower(a, spec, overrides, group)
        out_dir = Path(a.out)
        study = open_study(spec, storage, out_dir, a.index, a.storage_wait)
        tracking = None if a.no_tracking else Tracking.open(a.tracking_uri or os.environ.get(TRACKING_ENV), spec.name)
    except (ConfigError, FileNotFoundError, TrackingUnavailable, StorageUnavailable) as e:
        print(f"worker {a.index}: error: {e}", file=sys.stderr)
        if group is not None:
            group.close(2)
        return 2
    if not a.dry_run:
        worker_threads(a.workers)
        set_memory_share(a.per_gpu)
    ctx = SweepContext(spec, out_dir, overrides, tracking, study.user_attrs.get(PARENT_ATTR), a.index,
                       per_gpu=a.per_gpu, progress=False, dry_run=a.dry_run, group=group)
    code = _lead(a, study, ctx)
    if group is not None:
        group.close(code)
    return code


def _lead(a: argparse.Namespace, study: optuna.Study, ctx: SweepContext) -> int:
    """The worker's trials (rank 0 of a group) -> its exit code."""
    timeout = a.timeout or ctx.spec.budget.timeout_s
    with handlers():
        max_end = start_deadline(a.max_time)
        try:
            run_worker(study, ctx, a.trials, dry_run_objective if a.dry_run else objective,
                       time.time() + timeout if timeout else None, max_time_end=max_end)
        except SweepStopped as e:
            print(f"worker {a.index}: {e}", file=sys.stderr)
            return 1
        except StorageUnavailable as e:
            print(f"worker {a.index}: error: {e}", file=sys.stderr)
            return 1
        except Preempted as e:
            print(f"worker {a.index}: {e.reason}: its trial in flight is checkpointed and resumes on the next start",
                  file=sys.stderr)
            return outcome_of(e).exit_code
        except RankLost as e:
            print(f"worker {a.index}: {e}; its trial resumes from its last checkpoint on the next start "
                  f"(or in another worker)", file=sys.stderr)
            return outcome_of(e).exit_code
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
