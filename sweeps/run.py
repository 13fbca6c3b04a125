"""Run an Optuna study over the VICReg trainer, tracked in MLflow.

    python sweeps/run.py --study demo                  # experiments/demo.yaml
    python sweeps/run.py --study drac22 --data-root /data/DRAC22 --trials 50 --workers 2
    python sweeps/run.py --config my_study.yaml --storage postgresql://user@db/optuna \\
        --tracking-uri http://mlflow:5000 --gpus 0,1,2,3
    python sweeps/run.py --study demo --best            # print the best configurations

Rerunning the same command resumes the study: --trials is the total wanted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402
import yaml  # noqa: E402

from sweeps.objective import (  # noqa: E402
    INTERRUPTED,
    PREEMPT,
    Preempted,
    SweepContext,
    check_interrupted,
    on_sigint,
    preempt,
    worker_threads,
)
from sweeps.storage import StorageUnavailable, claim_lock, make_storage  # noqa: E402
from sweeps.study import Study, load_study, study_path  # noqa: E402
from sweeps.tracking import PARENT_ATTR, Tracking, TrackingUnavailable, mask_url, runs_page  # noqa: E402
from sweeps.worker import (  # noqa: E402
    SweepStopped,
    best_path,
    counts,
    fail_stale,
    record_best,
    run_worker,
    timing_summary,
)
from vicreg.config import ConfigError, DataError  # noqa: E402
from vicreg.weights import ENV as IMAGENET_ENV  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--study", help="a study in experiments/ (demo, drac22, cifar10)")
    src.add_argument("--config", help="a study file anywhere")
    p.add_argument("--trials", type=int, help="total finished trials wanted (default: the study's budget)")
    p.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    p.add_argument("--max-time", type=float, metavar="SECONDS",
                   help="per worker: start no trial that would not fit, and at this limit checkpoint and stop the "
                        "trial in flight; it resumes on the next start (for SLURM time limits, preemptible machines)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    p.add_argument("--gpus", help="comma-separated GPU ids: one worker per GPU")
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
                   help="write the DRAC22 submission from a registered encoder (--model) and exit")
    p.add_argument("--model", metavar="URI", help="for --predict: models:/NAME@ALIAS, models:/NAME/VERSION or "
                                                  "runs:/RUN/encoder (default: models:/vicreg-<study>@best)")
    p.add_argument("--submission", metavar="CSV", help="for --predict: the file to write "
                                                       "(default: runs/<study>/submission.csv)")
    p.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict:
    from vicreg.config import parse_overrides

    out = dict(parse_overrides(args.set))
    if args.data_root:
        out["data.root"] = args.data_root
    if args.test_root:
        out["data.test_root"] = args.test_root
    return out


def check_init(spec: Study, overrides: dict) -> None:
    """A study that can start from ImageNet weights needs the file before any trial starts."""
    from vicreg.weights import init_weights

    cfg = spec.config({}, overrides)
    for init in spec.values_of("model.init", overrides):
        try:
            init_weights(dataclasses.replace(cfg.model, init=init))
        except ConfigError as e:
            hint = "; or --set model.init=random to search without it" if len(spec.values_of("model.init")) > 1 else ""
            raise ConfigError(f"{spec.path}: {e}{hint}") from None


def preflight(spec: Study, overrides: dict) -> None:
    """Check the data before any long work: a bad dataset fails in seconds."""
    cfg = spec.config({}, overrides)
    if cfg.data.dataset == "drac22" and not cfg.data.root and not os.environ.get("DRAC22_ROOT"):
        raise DataError(f"study '{spec.name}' needs the DRAC22 data: pass --data-root DIR (or set "
                        f"DRAC22_ROOT) pointing at the download from drac22.grand-challenge.org; "
                        f"to try the tool without it: python sweeps/run.py --study demo")
    check_init(spec, overrides)
    from vicreg.data import load_datasets

    load_datasets(cfg.data)  # scans, checks and fills the cache (the synthetic set is made here)


def predict_entry(spec: Study, args: argparse.Namespace) -> int:
    """--predict: fetch the encoder and its run's config through MLflow, hand them to vicreg's
    predict (which never imports mlflow), write the submission."""
    from vicreg.config import config_from_dict, set_key
    from vicreg.predict import describe, predict

    out_dir = Path(args.out or f"runs/{spec.name}")
    uri = args.model or f"models:/vicreg-{spec.name}@best"
    tracking = Tracking.open(args.tracking_uri, spec.name)
    try:
        encoder, raw, run_id = tracking.load_encoder(uri)
    except Exception as e:  # noqa: BLE001 - an unknown model or alias is a user error, one line
        raise ConfigError(f"--model {uri}: {str(e).strip().splitlines()[0][:300]}") from None
    for key, value in overrides_from(args).items():
        set_key(raw, key, value)
    cfg = config_from_dict(raw, source=f"{uri} (config.yaml of run {run_id})")
    folds = out_dir / "folds.csv"
    out = Path(args.submission or out_dir / "submission.csv")
    report = predict(encoder, cfg, out, folds if folds.is_file() else None)
    print(f"{describe(report, out, len(report.test_probs))}; encoder {uri} (run {run_id})")
    return 0


def print_best(spec: Study) -> int:
    path = best_path(spec)
    if not path.is_file():
        print(f"no completed trials yet for study '{spec.name}' ({path} does not exist)")
        return 1
    try:
        doc = yaml.safe_load(path.read_text())
        params = list(doc["top"][0]["params"])
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        raise ConfigError(f"{path}: cannot be parsed as a best-configurations file; delete it (the next "
                          f"trial or --confirm rewrites it)") from None
    print(f"study {doc['study']}: trials ranked by {doc['metric']} ({doc['direction']}) on the CV folds, "
          f"the score they were selected on (optimistic); updated {doc['updated']}")
    print(f"{'rank':>4} {'trial':>5} {'CV value':>8}  {'CV kappa':>17}  " + "  ".join(params))
    for e in doc["top"]:
        vals = "  ".join(_fmt(e["params"].get(k, "-")) for k in params)
        print(f"{e['rank']:>4} {e['trial']:>5} {e['value']:8.4f}  {e['kappa']:>17}  {vals}")
    floors = doc["top"][0].get("baselines_cv_kappa") or {}
    if floors:
        print("baselines on the same CV folds and head seed, no pretraining: "
              + ", ".join(f"{k} CV kappa {v:.4f}" for k, v in floors.items()))
    confirmed = doc.get("confirmed") or []
    if confirmed:
        print(confirmed_table(confirmed, doc.get("confirm_seeds", 0)))
        if confirmed[0].get("pretrain_images"):
            from vicreg.data import describe_pretrain

            print(f"({describe_pretrain(confirmed[0]['pretrain_images'])})")
        print("verdict for the confirmed best (paired over folds x seeds):")
        for line in doc["verdict"]:
            print(f"  {line}")
        vic = confirmed[0]["scores"].get("vicreg", {})
        print(f"quote: hold-out kappa {vic.get('holdout_kappa', float('nan')):.4f} +- "
              f"{vic.get('holdout_kappa_std', float('nan')):.4f} (confirmed best, trial {confirmed[0]['trial']}, "
              f"mean +- std over {confirmed[0]['seeds']} seeds)")
    else:
        print(f"not confirmed yet: python sweeps/run.py --config {spec.path} --confirm")
    print(f"rerun the best: {doc['rerun']}")
    return 0


def confirmed_table(confirmed: list[dict], seeds: int) -> str:
    """The confirm stage's ranking: VICReg and each baseline, CV / pooled / hold-out kappa."""
    labels = [k for k in confirmed[0]["scores"] if k != "vicreg"]
    lines = [f"\nconfirmed: top {len(confirmed)} configurations pretrained again with {seeds} seeds, ranked by "
             f"CV kappa (mean over seeds of the per-fold mean); hold-out = images no selection saw",
             f"{'rank':>4} {'trial':>5}  {'CV kappa':>15}  {'pooled':>6}  {'hold-out kappa':>15}  "
             + "  ".join(f"{lab + ' CV / hold-out':>26}" for lab in labels)]

    def pm(d: dict, key: str) -> str:
        return f"{d.get(key, float('nan')):.4f} +- {d.get(key + '_std', float('nan')):.3f}"

    for e in confirmed:
        v = e["scores"].get("vicreg", {})
        base = "  ".join(f"{e['scores'][lab]['cv_kappa']:12.4f} / {e['scores'][lab]['holdout_kappa']:.4f}"
                         for lab in labels if lab in e["scores"])
        pooled = v.get("pooled_kappa", float("nan"))
        lines.append(f"{e['rank']:>4} {e['trial']:>5}  {pm(v, 'cv_kappa'):>15}  {pooled:6.4f}"
                     f"  {pm(v, 'holdout_kappa'):>15}  {base}")
    return "\n".join(lines)


def _space(d) -> object:
    if d.kind == "by":
        return {str(c): _space(sub) for c, sub in d.cases.items()}
    return d.choices or [d.low, d.high]


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def study_plots(study: optuna.Study, tracking: Tracking, parent: str, out_dir: Path) -> None:
    """Optuna's history, importances, parallel coordinates and slices as PNGs on the parent run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return
    folder = out_dir / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    plots = {"history": ovm.plot_optimization_history, "parallel_coordinates": ovm.plot_parallel_coordinate,
             "slices": ovm.plot_slice, "importances": ovm.plot_param_importances}
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        for name, fn in plots.items():
            if name == "importances" and len(done) < 3:
                continue  # fANOVA needs a few completed trials
            try:
                ax = fn(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(max(8, fig.get_figwidth()), 5)
                fig.tight_layout()
                fig.savefig(folder / f"{name}.png", dpi=80)
                plt.close(fig)
                paths.append(folder / f"{name}.png")
            except (ValueError, RuntimeError) as e:  # e.g. a single distinct value
                print(f"note: no {name} plot ({e})")
    tracking.log_artifacts(parent, paths, "optuna")


def open_study(spec: Study, args: argparse.Namespace, out_dir: Path, worker: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(args.storage, out_dir, args.storage_wait)
    study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,
                                pruner=spec.make_pruner(), load_if_exists=True)
    # Sampler seeds: seed + worker on a fresh study (reproducible), moved on by the trials already
    # there, so that a resumed study does not draw its first samples again, and by the host on a
    # database, so that two machines' worker 0 do not draw alike.
    offset = worker + 1009 * len(study.get_trials(deepcopy=False))
    if args.storage and not args.storage.startswith("journal:"):
        offset += zlib.crc32(socket.gethostname().encode()) % 100_003
    study.sampler = spec.make_sampler(offset)
    return study


def spawn_workers(args: argparse.Namespace, spec: Study, target: int, out_dir: Path, n: int,
                  gpus: list[str]) -> list[subprocess.Popen]:
    """`n` worker processes running this study's trials (one per GPU with --gpus)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--config", str(spec.path), "--trials", str(target),
           "--out", str(out_dir)]
    for flag, value in (("--tracking-uri", args.tracking_uri), ("--timeout", args.timeout),
                        ("--max-time", args.max_time),
                        ("--data-root", args.data_root), ("--test-root", args.test_root),
                        ("--storage-wait", args.storage_wait)):
        if value is not None:
            cmd += [flag, str(value)]
    for item in args.set:
        cmd += ["--set", item]
    cmd += [flag for flag, on in (("--no-tracking", args.no_tracking), ("--dry-run", args.dry_run)) if on]
    procs = []
    for i in range(n):
        env = dict(os.environ, VICREG_SWEEP_WORKERS=str(n))
        if args.storage:  # in the environment, not the command line that `ps` shows everyone
            env["VICREG_SWEEP_STORAGE"] = args.storage
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i]
        procs.append(subprocess.Popen([*cmd, "--worker-index", str(i)], env=env))
    return procs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = load_study(args.config or study_path(args.study))
        if args.dry_run:  # its own Optuna study, MLflow experiment, runs/ folder and best file
            spec = dataclasses.replace(spec, name=f"{spec.name}-dryrun")
        if args.best:
            return print_best(spec)
        if args.predict:
            return predict_entry(spec, args)
        overrides = overrides_from(args)
        spec.config({}, overrides)  # --set values are checked like the study file
        spec, dropped = spec.fixed(overrides)
        if dropped and args.worker_index is None:
            print(f"--set fixes {', '.join(dropped)}: not searched in this run")
        if args.imagenet_weights:
            if not Path(args.imagenet_weights).expanduser().is_file():
                raise ConfigError(f"--imagenet-weights: {args.imagenet_weights} does not exist "
                                  f"(weights are never downloaded)")
            os.environ[IMAGENET_ENV] = args.imagenet_weights  # the workers and confirm runs inherit it
        if args.trials is not None and args.trials < 1:
            raise ConfigError("--trials must be >= 1")
        target = args.trials or spec.trials
        out_dir = Path(args.out or f"runs/{spec.name}")
        if args.worker_index is None:
            preflight(spec, overrides)
        else:
            check_init(spec, overrides)
            args.storage = args.storage or os.environ.get("VICREG_SWEEP_STORAGE")
        if args.storage and mask_url(args.storage) != args.storage:  # it carries a password
            print("note: the password in --storage is visible to other users of this machine (ps); "
                  "put it in ~/.pgpass or PGPASSWORD instead", file=sys.stderr)
    except (ConfigError, DataError, FileNotFoundError, TrackingUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    INTERRUPTED.clear()
    PREEMPT["reason"] = None
    previous = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGINT, on_sigint),
        (signal.SIGTERM, lambda signum, frame: preempt("terminated (SIGTERM)")),
        (signal.SIGALRM, lambda signum, frame: preempt("time limit (--max-time)")))}
    try:
        return _run(args, spec, overrides, target, out_dir)
    except (StorageUnavailable, TrackingUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if "cannot open" in str(e) else 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _parent_run(spec: Study, study: optuna.Study, tracking: Tracking, args: argparse.Namespace,
                overrides: dict) -> str:
    """The study's MLflow parent run (found again on resume), remembered on the Optuna study."""
    parent = tracking.parent_run(spec.name, study.user_attrs.get(PARENT_ATTR), {
        "sampler": spec.sampler["name"], "pruner": spec.pruner["name"], "metric": spec.metric,
        "dataset": spec.config({}, overrides).data.dataset})
    study.set_user_attr(PARENT_ATTR, parent)
    tracking.log_params(parent, {"study_file": str(spec.path), "metric": spec.metric,
                                 "direction": spec.direction, "sampler": spec.sampler, "pruner": spec.pruner,
                                 "search": {d.key: _space(d) for d in spec.search},
                                 "storage": mask_url(args.storage) or "journal (embedded)"})
    return parent


def _run(args: argparse.Namespace, spec: Study, overrides: dict, target: int, out_dir: Path) -> int:
    worker = args.worker_index or 0
    gpus = [g.strip() for g in args.gpus.split(",")] if args.gpus else []
    n_workers = len(gpus) or args.workers
    out_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(spec, args, out_dir, worker)
    tracking = None if args.no_tracking else Tracking.open(args.tracking_uri, spec.name)
    deadline = time.time() + (args.timeout or spec.timeout_s) if (args.timeout or spec.timeout_s) else None
    max_end = None
    if args.max_time and (args.worker_index is not None or (n_workers == 1 and not gpus)):
        signal.setitimer(signal.ITIMER_REAL, args.max_time)  # SIGALRM -> preempt("time limit")
        max_end = time.time() + args.max_time

    if args.worker_index is not None:  # a spawned worker: run trials, nothing else
        if not args.dry_run:
            worker_threads(int(os.environ.get("VICREG_SWEEP_WORKERS", "1")))
        ctx = SweepContext(spec, out_dir, overrides, tracking, study.user_attrs.get(PARENT_ATTR), worker,
                           progress=False, dry_run=args.dry_run)
        try:
            run_worker(study, ctx, target, deadline, max_time_end=max_end)
        except SweepStopped as e:
            print(f"worker {worker}: {e}", file=sys.stderr)
            return 1
        except Preempted as e:
            print(f"worker {worker}: {e.reason}: its trial in flight is checkpointed and resumes on the next start",
                  file=sys.stderr)
            return 0 if "time limit" in e.reason else 143
        except KeyboardInterrupt:
            return 130
        return 0

    # Under the claim lock: machines starting together must find one parent run, and a worker
    # mid-claim has a trial without its pid yet.
    with claim_lock(study, out_dir):
        parent = _parent_run(spec, study, tracking, args, overrides) if tracking is not None else None
        stale = fail_stale(study, tracking)
    if stale:
        print(f"trials {stale} were left running by a dead worker: marked failed, will be retried")
    c = counts(study)
    print(f"study '{spec.name}': {c['done']}/{target} trials finished"
          + (f", resuming ({c['failed']} failed before)" if c["done"] or c["failed"] else "")
          + (f"; MLflow experiment '{spec.name}', parent run {parent}" if parent else ""))

    timings = out_dir / "timings.jsonl"
    timings_from = timings.stat().st_size if timings.is_file() else 0
    status, code = "FINISHED", 0
    try:
        if not args.confirm:
            status, code = _run_trials(args, spec, study, tracking, parent, overrides, target, out_dir, c, deadline,
                                       n_workers, gpus, max_end)
        if args.confirm or (code == 0 and counts(study)["done"] >= target):
            try:
                _confirm_stage(args, spec, study, tracking, parent, overrides, out_dir)
            except (KeyboardInterrupt, SweepStopped):
                raise
            except Exception as e:  # noqa: BLE001 - the run is FAILED with its traceback in MLflow
                print(f"error: the confirm stage failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
                      f"its finished runs are kept: rerun with --confirm to resume", file=sys.stderr)
                status, code = "FAILED", 1
    except SweepStopped as e:
        print(f"error: {e}", file=sys.stderr)
        status, code = "FAILED", 1
    except Preempted as e:  # SIGTERM or --max-time (before Ctrl-C: it is a KeyboardInterrupt too)
        status, code = "KILLED", 0 if "time limit" in e.reason else 143
        print(f"\n{e.reason}: the trial in flight is checkpointed and marked failed; run the same command "
              f"again to resume it from its last epoch", file=sys.stderr)
    except KeyboardInterrupt:
        status, code = "KILLED", 130
        print("\ninterrupted: the running trial is marked failed and its MLflow run ended; "
              "run the same command again to resume", file=sys.stderr)
    finally:
        if tracking is not None and parent is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the parent's bookkeeping finish
            if code == 0 and counts(study)["done"] < target:
                status = "KILLED"  # stopped by --timeout before the target
            study_plots(study, tracking, parent, out_dir)
            tracking.end(parent, status, {"FINISHED": "COMPLETE"}.get(status, status))
    if code in (0, 1):
        line = timing_summary(timings, timings_from)
        if line:
            print(line)
        summary(spec, args, tracking)
    return code


def _run_trials(args: argparse.Namespace, spec: Study, study: optuna.Study, tracking: Tracking | None,
                parent: str | None, overrides: dict, target: int, out_dir: Path, c: dict, deadline: float | None,
                n_workers: int, gpus: list[str], max_end: float | None = None) -> tuple[str, int]:
    """Run trials until the study has `target` finished ones: in this process, or in workers.
    Returns the parent run's status and the exit code."""
    status, code = "FINISHED", 0
    if n_workers > 1 or gpus:  # --gpus 3 must still pin the worker to GPU 3
        procs = spawn_workers(args, spec, target, out_dir, n_workers, gpus)
        _wait_with_progress(study, procs, target)
        dead = [i for i, p in enumerate(procs) if p.returncode]
        if dead and counts(study)["done"] < target:
            status, code = "FAILED", 1
        elif dead:  # the others picked up its trial: the study is complete all the same
            print(f"note: worker(s) {dead} exited with an error; the other workers finished the study")
    else:
        from tqdm import tqdm

        ctx = SweepContext(spec, out_dir, overrides, tracking, parent, 0, progress=True, dry_run=args.dry_run)
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
            bar.write(f"trial {t.number}: {t.state.name.lower()}"
                      + (f", {spec.metric} {t.value:.4f}" if t.state == optuna.trial.TrialState.COMPLETE else "")
                      + (f" ({t.user_attrs['reason']})" if "reason" in t.user_attrs else ""))
            bar.refresh()

        run_worker(study, ctx, target, deadline, on_end, max_end)
        bar.close()
    return status, code


def _confirm_stage(args: argparse.Namespace, spec: Study, study: optuna.Study, tracking: Tracking | None,
                   parent: str | None, overrides: dict, out_dir: Path) -> None:
    """Confirm the top-k configurations (sweeps/confirm.py), then record and show them."""
    from sweeps.confirm import run_confirm

    seeds = args.seeds if args.seeds is not None else spec.confirm_seeds
    if args.dry_run:
        print("dry run: no confirm stage (it pretrains for real)")
        return
    if spec.confirm_top_k < 1 or seeds < 1:
        print("no confirm stage (the study's confirm.top_k or seeds is 0)")
        return
    print(f"confirm stage: the top {spec.confirm_top_k} configurations, pretrained again with {seeds} seeds "
          f"each, scored on the CV folds and the hold-out")
    ctx = SweepContext(spec, out_dir, overrides, tracking, parent, 0, progress=True, dry_run=False)
    ranked = run_confirm(study, ctx, spec.confirm_top_k, seeds)
    record_best(study, spec, tracking, None, out_dir)
    if tracking is not None and parent is not None:
        tracking.log_confirmed(parent, ranked)


def _wait_with_progress(study: optuna.Study, procs: list[subprocess.Popen], target: int) -> None:
    from tqdm import tqdm

    bar = tqdm(total=target, desc="trials", dynamic_ncols=True, disable=None)
    forwarded = False
    try:
        while any(p.poll() is None for p in procs):
            if PREEMPT["reason"] and not forwarded:  # SIGTERM to this process only (Kubernetes): pass it on
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                forwarded = True
            bar.n = min(counts(study)["done"], target)
            bar.refresh()
            time.sleep(1.0)
        bar.n = min(counts(study)["done"], target)
        bar.close()
        check_interrupted()
    except KeyboardInterrupt:
        for p in procs:  # they got the SIGINT too; wait for their cleanup
            p.wait()
        raise


def summary(spec: Study, args: argparse.Namespace, tracking: Tracking | None) -> None:
    print()
    if args.dry_run:
        print("dry run: nothing was trained, so no best-configurations file is written")
    if (args.dry_run or print_best(spec) == 0) and tracking is not None:
        uri = args.tracking_uri or "sqlite:///mlflow.db"
        server = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        if server == "http://127.0.0.1:5000":
            print(f"MLflow UI on this store: mlflow ui --backend-store-uri {mask_url(uri)} "
                  f"--host 127.0.0.1 --port 5000  (or: make ui)")
        print(f"the study's runs: {runs_page(server, tracking.experiment_id)}")


if __name__ == "__main__":
    sys.exit(main())
