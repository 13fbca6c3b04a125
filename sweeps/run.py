"""Run an Optuna study over the VICReg trainer, tracked in MLflow (installed as `vicreg-sweep`;
`python sweeps/run.py` is the same command).

    vicreg-sweep --study demo                  # experiments/demo.yaml
    vicreg-sweep --study drac22 --data-root /data/DRAC22 --trials 50 --workers 2
    vicreg-sweep --config my_study.yaml --storage postgresql://user@db/optuna \\
        --tracking-uri http://mlflow:5000 --gpus 0,1,2,3
    vicreg-sweep --study demo --best            # print the best configurations

Rerunning the same command resumes the study: --trials is the total wanted.

This file is the command line only: it parses and checks the arguments and the data, opens
the study and its MLflow parent run, runs the trials here or starts `python -m sweeps.worker`
processes (--workers, --gpus), then the confirm stage and the summary. (Run it from an
installed checkout, as `make` sets up: it imports the `sweeps` and `vicreg` packages.)
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from sweeps import optuna_compat
from sweeps.best import best_file, load_confirmed, read_best, record_best
from sweeps.cli import load_spec, overrides_from, start_deadline, writable
from sweeps.context import SweepContext
from sweeps.gpu_share import gpu_list, worker_gpus
from sweeps.launch import run_workers
from sweeps.objective import dry_run_objective, objective
from sweeps.outcome import SweepStopped, outcome_of
from sweeps.reports import closing_lines, print_best, study_report, timing_summary
from sweeps.signals import Preempted, handlers
from sweeps.storage import StorageUnavailable, claim_lock, open_study
from sweeps.study import EXPERIMENTS_DIR, StudySpec, check_init, study_path
from sweeps.text import describe_url, mask_url
from sweeps.tracking import (
    PARENT_ATTR,
    Tracking,
    TrackingUnavailable,
    load_encoder,
    log_confirmed,
    log_study_plots,
    open_parent,
)
from sweeps.worker import counts, fail_stale, run_worker
from vicreg.config import ConfigError
from vicreg.errors import DataError, first_line
from vicreg.imagenet import ENV as IMAGENET_ENV


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vicreg-sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if p.stem != "pretrain_synthetic"))
    src.add_argument("--study", help=f"a study in experiments/ ({known})")
    src.add_argument("--config", help="a study file anywhere")
    p.add_argument("--trials", type=int, help="total finished trials wanted (default: the study's budget)")
    p.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    p.add_argument("--max-time", type=float, metavar="SECONDS",
                   help="per worker: start no trial that would not fit, and at this limit checkpoint and stop the "
                        "trial in flight; it resumes on the next start (for SLURM time limits, preemptible machines)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--gpus", help="comma-separated GPU ids: one worker per GPU (--per-gpu N: N per GPU)")
    p.add_argument("--gpus-per-trial", type=int, default=1, metavar="N",
                   help="each trial trains on N GPUs at once (a group of N processes, data-parallel; "
                        "sweeps/group.py): --gpus 0-7 --gpus-per-trial 4 runs two 4-GPU trials at once. Without "
                        "--gpus, each of --workers is a group of N (with --set train.device=cpu: N CPU processes)")
    p.add_argument("--per-gpu", type=int, default=1, metavar="N",
                   help="with --gpus: N worker processes on each GPU, each capped at (1 - 5%%)/N of its memory; a "
                        "trial that still runs out of memory is retried once alone on its GPU")
    p.add_argument("--mps", action="store_true",
                   help="with --gpus: start the CUDA MPS daemon for the sweep's GPUs (kernels of the packed "
                        "workers then run at once) and stop it at the end; without the binary, one line and no MPS")
    p.add_argument("--storage", help="Optuna storage URL (default: an embedded journal file "
                                     "in runs/<study>/); postgresql://... for many machines")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's, sqlite:///mlflow.db)")
    p.add_argument("--data-root", help="dataset folder (or DRAC22_ROOT)")
    p.add_argument("--test-root", help="DRAC22 test set under its own root")
    p.add_argument("--out", help="study output folder (default runs/<study>)")
    p.add_argument("--imagenet-weights", metavar="FILE",
                   help="local torchvision weights for model.init imagenet/auto (sets VICREG_IMAGENET_WEIGHTS "
                        "for the workers; never downloaded)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config value for every trial, e.g. train.device=cpu")
    p.add_argument("--storage-wait", type=float, default=600.0, metavar="SECONDS",
                   help="how long workers wait out an unreachable database before giving up (default 600)")
    p.add_argument("--dry-run", action="store_true",
                   help="everything but training: sampling, storage, workers, pruning and MLflow, with a "
                        "stand-in objective (checks a many-machine set-up in seconds)")
    p.add_argument("--no-tracking", action="store_true", help="no MLflow (for benchmarks)")
    p.add_argument("--best", action="store_true", help="print the best configurations and exit")
    p.add_argument("--confirm", action="store_true",
                   help="re-pretrain the top-k configurations with --seeds seeds and score the hold-out, "
                        "then exit (also done when a study ends; stored runs are reused)")
    p.add_argument("--seeds", type=int, help="seeds per confirmed configuration (default: the study's confirm.seeds)")
    p.add_argument("--predict", action="store_true",
                   help="write the test images' predictions from a registered encoder (--model) and exit: the "
                        "DRAC22 submission file, or image,class,P0..Pk for a folder/CSV set's test images")
    p.add_argument("--model", metavar="URI", help="for --predict: models:/NAME@ALIAS, models:/NAME/VERSION or "
                                                  "runs:/RUN/encoder (default: models:/vicreg-<study>@best)")
    p.add_argument("--submission", metavar="CSV", help="for --predict: the file to write "
                                                       "(default: runs/<study>/submission.csv)")
    return p.parse_args(argv)


# run.py's own argument checks, in one place: (bad, the one-line error), before any work.
ARGUMENT_CHECKS: list[tuple[Callable[[argparse.Namespace], bool], str]] = [
    (lambda a: a.trials is not None and a.trials < 1, "--trials must be >= 1"),
    (lambda a: a.workers < 1, "--workers must be >= 1"),
    (lambda a: a.max_time is not None and a.max_time <= 0, "--max-time must be a number of seconds > 0"),
    (lambda a: a.timeout is not None and a.timeout <= 0, "--timeout must be a number of seconds > 0"),
    (lambda a: a.seeds is not None and not 1 <= a.seeds < 500, "--seeds must be 1..499 (quote seeds start at +500)"),
    (lambda a: a.storage_wait < 0, "--storage-wait must be a number of seconds >= 0"),
    (lambda a: a.storage is not None and a.storage.strip() in ("", "journal:"),
     "--storage needs a database URL or journal:PATH"),
    (lambda a: bool(a.gpus) and not all(re.fullmatch(r"\d+(-\d+)?", g.strip()) for g in a.gpus.split(","))
     or bool(a.gpus) and not gpu_list(a.gpus),
     "--gpus takes comma-separated GPU numbers or ranges, e.g. 0,1 or 0-7"),
    (lambda a: a.gpus_per_trial < 1, "--gpus-per-trial must be >= 1"),
    (lambda a: a.gpus_per_trial > 1 and a.per_gpu > 1,
     "--gpus-per-trial and --per-gpu do not combine: a trial on several GPUs has them to itself"),
    (lambda a: bool(a.gpus) and len(gpu_list(a.gpus)) % a.gpus_per_trial != 0,
     "--gpus must list a multiple of --gpus-per-trial GPUs (each trial takes that many)"),
    (lambda a: a.per_gpu < 1, "--per-gpu must be >= 1"),
    (lambda a: a.per_gpu > 1 and not a.gpus, "--per-gpu needs --gpus (the GPUs to pack the workers on)"),
    (lambda a: a.mps and not a.gpus, "--mps needs --gpus (the GPUs whose MPS daemon to start)"),
]


def check_arguments(args: argparse.Namespace) -> None:
    """The first failing ARGUMENT_CHECKS row as a ConfigError (one line, exit 2)."""
    for bad, message in ARGUMENT_CHECKS:
        if bad(args):
            raise ConfigError(message)


def preflight(spec: StudySpec, overrides: dict) -> None:
    """Check the data before any long work: a bad dataset fails in seconds."""
    cfg = spec.config({}, overrides)
    if cfg.data.dataset == "drac22" and not cfg.data.root and not os.environ.get("DRAC22_ROOT"):
        raise DataError(f"study '{spec.name}' needs the DRAC22 data: pass --data-root DIR (or set "
                        f"DRAC22_ROOT) pointing at the download from drac22.grand-challenge.org; "
                        f"to try the tool without it: vicreg-sweep --study demo")
    check_init(spec, overrides)
    from vicreg.data import load_datasets
    from vicreg.data.synthetic import ensure_synthetic

    ensure_synthetic(cfg.data)  # the default synthetic set is made here, once
    load_datasets(cfg.data, cfg.model.in_channels)  # scans, checks and fills the cache


def predict_entry(spec: StudySpec, args: argparse.Namespace) -> int:
    """--predict: fetch the encoder and its run's config through MLflow, hand them to vicreg's
    predict (which never imports mlflow), write the submission."""
    from vicreg.config import config_from_dict, primary_metric, set_key
    from vicreg.evaluate.predict import describe, predict

    out_dir = Path(args.out or f"runs/{spec.name}")
    uri = args.model or f"models:/vicreg-{spec.name}@best"
    tracking = Tracking.open(args.tracking_uri, spec.name)
    try:
        encoder, raw, run_id = load_encoder(tracking, uri)
    except Exception as e:  # an unknown model or alias is a user error, one line
        raise ConfigError(f"--model {uri}: {first_line(e)}") from None
    for key, value in overrides_from(args.set, args.data_root, args.test_root).items():
        set_key(raw, key, value)
    cfg = config_from_dict(raw, source=f"{uri} (the config stored with its weights, run {run_id})")
    folds = out_dir / "folds.csv"
    out = Path(args.submission or out_dir / "submission.csv")
    report = predict(encoder, cfg, out, folds if folds.is_file() else None)
    print(f"{describe(report, out, len(report.test_probs), primary_metric(cfg.data))}; encoder {uri} (run {run_id})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        optuna_compat.require()
        overrides = overrides_from(args.set, args.data_root, args.test_root)
        path = args.config or study_path(args.study)
        spec = load_spec(path, args.dry_run)
        if args.best:
            return print_best(spec)
        if args.predict:
            return predict_entry(spec, args)
        spec, dropped = spec.fixed(overrides)
        if dropped:
            print(f"--set fixes {', '.join(dropped)}: not searched in this run")
        if args.imagenet_weights:
            if not Path(args.imagenet_weights).expanduser().is_file():
                raise ConfigError(f"--imagenet-weights: {args.imagenet_weights} does not exist "
                                  f"(weights are never downloaded)")
            os.environ[IMAGENET_ENV] = args.imagenet_weights  # the workers and confirm runs inherit it
        check_arguments(args)
        target = args.trials or spec.budget.trials
        out_dir = Path(args.out or f"runs/{spec.name}")
        writable(out_dir, "--out")
        if args.storage and args.storage.startswith("journal:"):
            writable(Path(args.storage.removeprefix("journal:")).parent, "--storage journal:")
        preflight(spec, overrides)
        if args.storage and mask_url(args.storage) != args.storage:  # it carries a password
            print("note: the password in --storage is visible to other users of this machine (ps); "
                  "put it in ~/.pgpass or PGPASSWORD instead", file=sys.stderr)
    except (ConfigError, DataError, FileNotFoundError, TrackingUnavailable, optuna_compat.OptunaMoved) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (UnicodeDecodeError, OSError, ValueError) as e:  # faults of what was read, before any work
        print(f"error: {first_line(e, with_type=True)}", file=sys.stderr)
        return 2

    with handlers():
        try:
            return _run(args, spec, overrides, target, out_dir)
        except (StorageUnavailable, TrackingUnavailable) as e:  # a tracking store is only ever lost at open
            print(f"error: {e}", file=sys.stderr)
            return 2 if isinstance(e, TrackingUnavailable) or e.at_start else 1


@dataclass
class Plan:
    """One command's settled inputs, which the steps of _run share."""

    args: argparse.Namespace
    spec: StudySpec
    overrides: dict
    target: int  # finished trials wanted
    out_dir: Path
    study: optuna.Study
    tracking: Tracking | None
    parent: str | None = None  # the study's MLflow parent run
    gpus: list[str] = field(default_factory=list)  # one entry per worker (gpu_share.worker_gpus)
    n_workers: int = 1
    deadline: float | None = None  # --timeout: no trial starts after it
    max_end: float | None = None  # --max-time in this process (one worker, no --gpus)


def _run(args: argparse.Namespace, spec: StudySpec, overrides: dict, target: int, out_dir: Path) -> int:
    gpus = worker_gpus(gpu_list(args.gpus), args.per_gpu, args.gpus_per_trial) if args.gpus else []
    out_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, args.storage, out_dir, 0, args.storage_wait)
    tracking = None if args.no_tracking else Tracking.open(args.tracking_uri, spec.name)
    timeout = args.timeout or spec.budget.timeout_s
    plan = Plan(args, spec, overrides, target, out_dir, study, tracking, gpus=gpus, n_workers=len(gpus) or args.workers,
                deadline=time.time() + timeout if timeout else None)
    if args.max_time and plan.n_workers == 1 and not gpus:  # workers set their own alarm
        plan.max_end = start_deadline(args.max_time)

    parent = _open_parent(plan)
    c = counts(study)
    print(f"study '{spec.name}': {c['done']}/{target} trials finished"
          + (f", resuming ({c['failed']} failed before)" if c["done"] or c["failed"] else "")
          + (f"; MLflow experiment '{spec.name}', parent run {parent}" if parent else ""))

    timings = out_dir / "timings.jsonl"
    timings_from = timings.stat().st_size if timings.is_file() else 0
    status, code = "FINISHED", 0
    try:
        status, code = _stages(plan, c)
    finally:
        if tracking is not None and parent is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the parent's bookkeeping finish
            if code == 0 and counts(study)["done"] < target:
                status = "KILLED"  # stopped by --timeout before the target
            # A study that asks for no plots gets none (Optuna's take ~2 s), nor does a dry run,
            # whose values are made up.
            if spec.log_plots and not args.dry_run:
                log_study_plots(tracking, parent, study, out_dir / "plots")
            tracking.end(parent, status, {"FINISHED": "COMPLETE"}.get(status, status))
    if code in (0, 1):
        line = timing_summary(timings, timings_from)
        if line:
            print(line)
        closing_lines(spec, args.dry_run, args.tracking_uri, tracking.experiment_id if tracking else None)
    return code


def _open_parent(plan: Plan) -> str | None:
    """The study's MLflow parent run (found or made), and the trials a dead worker left running
    failed, under the claim lock: machines starting together must find one parent run, and a
    worker mid-claim has a trial without its pid yet."""
    spec, study, tracking = plan.spec, plan.study, plan.tracking
    with claim_lock(study, plan.out_dir):
        if tracking is not None:
            plan.parent = open_parent(tracking, spec.name, study.user_attrs.get(PARENT_ATTR), {
                "sampler": spec.sampler.name, "pruner": spec.pruner.name, "metric": spec.objective.metric,
                "dataset": spec.config({}, plan.overrides).data.dataset}, {
                "study_file": str(spec.path), "metric": spec.objective.metric,
                "direction": spec.objective.direction,
                "sampler": {"name": spec.sampler.name, "seed": spec.sampler.seed, **spec.sampler.options},
                "pruner": {"name": spec.pruner.name, **spec.pruner.options},
                "search": {d.key: d.described() for d in spec.search},
                "storage": describe_url(plan.args.storage)})
            study.set_user_attr(PARENT_ATTR, plan.parent)
        stale = fail_stale(study, tracking)
    if stale:
        print(f"trials {stale} were left running by a dead worker: marked failed, will be retried")
    return plan.parent


def _stages(plan: Plan, c: dict) -> tuple[str, int]:
    """The trials, then the confirm stage (when asked, or when the trials reached the target);
    -> the parent run's status and the exit code, from how they ended (sweeps/outcome.py)."""
    try:
        if not plan.args.confirm:
            status, code = _run_trials(plan, c)
        else:
            status, code = "FINISHED", 0
        if plan.args.confirm or (code == 0 and counts(plan.study)["done"] >= plan.target):
            try:
                _confirm_stage(plan)
            except (KeyboardInterrupt, SweepStopped):
                raise
            except Exception as e:  # the run is FAILED with its traceback in MLflow
                print(f"error: the confirm stage failed ({first_line(e, with_type=True)}); "
                      f"its finished runs are kept: rerun with --confirm to resume", file=sys.stderr)
                status, code = "FAILED", 1
    except SweepStopped as e:
        print(f"error: {e}", file=sys.stderr)
        status, code = "FAILED", outcome_of(e).exit_code
    except Preempted as e:  # SIGTERM or --max-time (before Ctrl-C: it is a KeyboardInterrupt too)
        status, code = "KILLED", outcome_of(e).exit_code
        print(f"\n{e.reason}: the trial in flight is checkpointed and marked failed; run the same command "
              f"again to resume it from its last epoch", file=sys.stderr)
    except KeyboardInterrupt as e:
        status, code = "KILLED", outcome_of(e).exit_code
        print("\ninterrupted: the running trial is marked failed and its MLflow run ended; "
              "run the same command again to resume", file=sys.stderr)
    return status, code


def _run_trials(plan: Plan, c: dict) -> tuple[str, int]:
    """Run trials until the study has `plan.target` finished ones: in this process, or in
    workers (sweeps/launch.py). Returns the parent run's status and the exit code."""
    args, spec, study, target = plan.args, plan.spec, plan.study, plan.target
    status, code = "FINISHED", 0
    if plan.n_workers > 1 or plan.gpus or args.gpus_per_trial > 1:  # --gpus 3 must still pin the worker to GPU 3
        procs = run_workers(args, spec, study, target, plan.out_dir, plan.gpus)
        dead = [i for i, p in enumerate(procs) if p.returncode]
        if dead and counts(study)["done"] < target:
            status, code = "FAILED", 1
        elif dead:  # the others picked up its trial: the study is complete all the same
            print(f"note: worker(s) {dead} exited with an error; the other workers finished the study")
    else:
        from tqdm import tqdm

        ctx = SweepContext(spec, plan.out_dir, plan.overrides, plan.tracking, plan.parent, 0, progress=True,
                           dry_run=args.dry_run)
        # disable=None: no bar when stdout is not a terminal (CI, SLURM, nohup), where each
        # update would be a carriage-return line; the one line per trial below is printed anyway.
        bar = tqdm(total=target, initial=min(c["done"], target), desc="trials", position=0,
                   dynamic_ncols=True, disable=None)

        def on_end(t: optuna.trial.FrozenTrial) -> None:
            bar.n = min(counts(study)["done"], target)
            try:
                bar.set_postfix(best=f"{study.best_value:.4f}")
            except ValueError:
                pass
            done = t.state == optuna.trial.TrialState.COMPLETE
            bar.write(f"trial {t.number}: {t.state.name.lower()}"
                      + (f", {spec.objective.metric} {t.value:.4f}" if done else "")
                      + (f" ({t.user_attrs['reason']})" if "reason" in t.user_attrs else ""))
            bar.refresh()

        run_worker(study, ctx, target, dry_run_objective if args.dry_run else objective, plan.deadline, on_end,
                   plan.max_end)
        bar.close()
    return status, code


def _confirm_stage(plan: Plan) -> None:
    """Confirm the top-k configurations (sweeps/confirm.py), then record and show them."""
    args, spec, study, tracking, parent, out_dir = (plan.args, plan.spec, plan.study, plan.tracking, plan.parent,
                                                     plan.out_dir)
    seeds = args.seeds if args.seeds is not None else spec.confirm.seeds
    if args.dry_run:
        print("dry run: no confirm stage (it pretrains for real)")
        return
    if spec.confirm.top_k < 1 or seeds < 1:
        print("no confirm stage (the study's confirm.top_k or seeds is 0)")
        return
    from sweeps.confirm import run_confirm  # torch and the trainer: 3 s a dry run need not pay

    print(f"confirm stage: the top {spec.confirm.top_k} configurations, pretrained again with {seeds} seeds "
          f"each, scored on the CV folds and the hold-out")
    ctx = SweepContext(spec, out_dir, plan.overrides, tracking, parent, 0, progress=True, dry_run=False)
    ranked = run_confirm(study, ctx, spec.confirm.top_k, seeds)
    record_best(study, spec, tracking, parent, None, load_confirmed(out_dir))
    doc, confirmed = read_best(best_file(spec)), load_confirmed(out_dir) or {}
    if tracking is not None and parent is not None and ranked and doc is not None:
        log_confirmed(tracking, parent, confirmed.get("headline"), study_report(doc))



if __name__ == "__main__":
    sys.exit(main())
