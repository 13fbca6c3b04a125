"""The sweep harness end to end on tiny studies: MLflow runs and statuses, pruning,
divergence, resume, Ctrl-C, kill -9, two workers, and every bad study file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from sweeps.run import main
from tests.helpers import (
    RUN_PY,
    env_optuna,
    env_runs,
    stop_mid_trial,
    study_runs,
    sweep_args,
    write_study,
)


@pytest.mark.slow  # 10 s (figures, an encoder file, a resume): make test; the fast set has other sweeps
def test_two_trials_tracked_then_resumed_to_three(env, capsys) -> None:
    study = write_study(env["dir"], env["root"], log_checkpoint=True, log_plots=True, budget={"trials": 2})
    assert main(sweep_args(env, study)) == 0
    client, parents, trials = env_runs(env)
    assert len(parents) == 1 and len(trials) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    for r in trials:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.info.status == "FINISHED" and r.data.tags["state"] == "COMPLETE"
        assert r.data.tags["synthetic"] == "true" and r.data.tags["dataset"] == "synthetic"
        assert {"optim.lr", "optim.weight_decay", "data.image_size", "model.arch"} <= set(r.data.params)
        assert r.info.run_name.startswith("trial-") and "lr=" in r.info.run_name
        history = client.get_metric_history(r.info.run_id, "loss")
        assert sorted(m.step for m in history) == [1, 2]
        for key in ("invariance", "variance", "covariance", "lr", "std", "images_per_s", "probe_kappa"):
            assert key in r.data.metrics
        assert "objective" in r.data.metrics
        arts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"config.yaml", "loss_terms.png", "vicreg_confusion.png", "vicreg_curves.png",
                "folds_scores.csv", "checkpoint"} <= arts
    assert "best_value" in parent.data.metrics
    # MLflow 3 opens a model-training experiment on its runs table, not the GenAI overview.
    assert client.get_experiment_by_name("tiny").tags["mlflow.experimentKind"] == "custom_model_development"
    parent_arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "tiny.top5.csv" in parent_arts and "optuna" in parent_arts
    opt = env_optuna(env)
    by_run = {t.user_attrs["mlflow_run_id"]: t for t in opt.trials}
    for r in trials:  # MLflow holds the scores Optuna optimised, trial by trial
        t = by_run[r.info.run_id]
        assert r.data.metrics["kappa_mean"] == pytest.approx(t.user_attrs["scores"]["kappa_mean"])
        assert r.data.metrics["objective"] == pytest.approx(t.value)
    best = yaml.safe_load((env["dir"] / "best" / "tiny.yaml").read_text())
    assert best["top"][0]["trial"] == opt.best_trial.number
    assert best["top"][0]["value"] == pytest.approx(opt.best_value)
    assert best["top"][0]["mlflow_run_id"] == opt.best_trial.user_attrs["mlflow_run_id"]
    assert best["top"][0]["config"]["optim"]["lr"] == pytest.approx(opt.best_trial.params["optim.lr"])
    assert (env["dir"] / "best" / "tiny.best-config.yaml").is_file()
    assert (env["dir"] / "runs" / "folds.csv").is_file()

    # Resume: --trials is the total; the parent run is found again, not duplicated. (The figures
    # and the encoder file are checked above: the third trial goes without them, 2 s cheaper.)
    study.write_text(study.read_text().replace("log_checkpoint: true", "log_checkpoint: false")
                     .replace("log_plots: true", "log_plots: false"))
    assert main(sweep_args(env, study, "--trials", "3")) == 0
    _, parents, trials = env_runs(env)
    assert len(parents) == 1 and len(trials) == 3
    resumed = env_optuna(env).trials
    assert len(resumed) == 3
    assert resumed[2].params not in [t.params for t in resumed[:2]]  # the sampler did not start over
    capsys.readouterr()
    assert main(["--config", str(study), "--best"]) == 0
    out = capsys.readouterr().out
    assert "rank trial" in out and "rerun the best: vicreg pretrain --config" in out


def test_pruned_trials_are_killed_with_their_tag(env) -> None:
    study = write_study(env["dir"], env["root"], pruner={"name": "threshold", "lower": 2.0},
                        budget={"trials": 2})
    assert main(sweep_args(env, study)) == 0
    _, _, trials = env_runs(env)
    assert len(trials) == 2
    for r in trials:
        assert r.info.status == "KILLED" and r.data.tags["state"] == "PRUNED"
        assert r.data.tags["pruned_epoch"] == "1"
    assert [t.state.name for t in env_optuna(env).trials] == ["PRUNED", "PRUNED"]


def test_a_diverging_trial_does_not_stop_the_sweep(env) -> None:
    # An invariance weight past float32's range (finite, so the config accepts it: an infinite one
    # is refused) makes the very first loss non-finite: the real diverged path.
    study = write_study(env["dir"], env["root"], search={"loss.sim_coeff": {"choice": [1e300, 25.0]}},
                        sampler={"name": "grid"}, budget={"trials": 2})
    assert main(sweep_args(env, study)) == 0
    trials = {t.params["loss.sim_coeff"]: t for t in env_optuna(env).trials}
    assert trials[1e300].state.name == "PRUNED"
    assert "non-finite loss at step 0" in trials[1e300].user_attrs["reason"]
    assert trials[1e300].constraints == {"diverged": 1.0}  # infeasible: TPE counts it as bad
    assert trials[25.0].state.name == "COMPLETE" and trials[25.0].constraints == {}
    _, _, runs = env_runs(env)
    assert sorted(r.data.tags["state"] for r in runs) == ["COMPLETE", "PRUNED"]


def _start(env, study: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, RUN_PY, *sweep_args(env, study, *extra)], cwd=env["dir"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_running_trial(env, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stdout.read()
        try:
            _, _, trials = env_runs(env)
            running = [r for r in trials if r.info.status == "RUNNING" and "loss" in r.data.metrics]
            if running:
                return
        except Exception:  # the store may not exist yet
            pass
        time.sleep(0.5)
    raise AssertionError("no trial started")


@pytest.mark.slow
def test_ctrl_c_leaves_no_run_running(env) -> None:
    base = write_study(env["dir"], env["root"])
    doc = yaml.safe_load(base.read_text())
    doc["base"]["train"]["epochs"] = 50
    base.write_text(yaml.safe_dump(doc))
    proc = _start(env, base)
    _wait_for_running_trial(env, proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    # stdout is a pipe, not a terminal: no progress bars (carriage returns), one line per epoch.
    assert "\r" not in out and "epoch   1/50  loss" in out
    assert "run the same command again to resume" in out
    _, parents, trials = env_runs(env)
    assert all(r.info.status != "RUNNING" for r in parents + trials)
    assert trials[0].info.status == "KILLED" and trials[0].data.tags["state"] == "INTERRUPTED"
    t = env_optuna(env).trials[0]
    assert t.state.name == "FAIL" and "interrupted" in t.user_attrs["reason"]


def _epochs_checkpointed(env) -> int:
    """Epochs in the (one) trial checkpoint under runs/checkpoints; 0 when there is none yet."""
    import torch

    for path in (env["dir"] / "runs" / "checkpoints").glob("trial*/last.pt"):
        try:
            # mmap: the weights stay on disk; a poll reads the history, not 135 MB of tensors.
            return len(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["history"])
        except Exception:  # replaced (atomically) while we read
            return 0
    return 0


def _wait_for_epochs(env, proc: subprocess.Popen, n: int, timeout: float = 180) -> None:
    t0 = time.time()
    while _epochs_checkpointed(env) < n:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < timeout, f"no checkpoint of {n} epochs"
        time.sleep(0.05)


def _four_epochs(env, name: str, **over) -> Path:
    """A 1-trial study of 4 epochs (16 px): the test freezes the process before it checks that
    the trial is still running and signals it (helpers.stop_mid_trial), so no epoch length
    is needed for the kill to land mid-trial; its polls read a mapped checkpoint every 50 ms."""
    study = write_study(env["dir"], env["root"], name=name, **{"budget": {"trials": 1}, **over})
    doc = yaml.safe_load(study.read_text())
    doc["base"]["train"]["epochs"] = 4
    study.write_text(yaml.safe_dump(doc))
    return study


@pytest.mark.slow
def test_killed_and_terminated_trials_resume_where_they_stopped(env) -> None:
    """kill -9 after epoch 1, restart; SIGTERM an epoch or two later, restart: each retry resumes
    from the last checkpoint, the pruner sees the stored probe values, MLflow holds epochs 1-4
    once in one run, and the scores equal an uninterrupted run's (bit-identical on CPU)."""
    reference = _four_epochs(env, "ref")
    assert main(sweep_args(env, reference, "--out", str(env["dir"] / "ref-runs"), "--no-tracking")) == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(env["dir"] / "ref-runs" / "optuna.journal")))
    straight = optuna.load_study(study_name="ref", storage=storage).trials[0]

    study = _four_epochs(env, "tiny")
    proc = _start(env, study)
    _wait_for_epochs(env, proc, 1)
    # Frozen first, so that the trial cannot finish between our look and the kill.
    assert stop_mid_trial(proc.pid, lambda: _epochs_checkpointed(env) < 3), "the trial ended before the kill"
    proc.wait()
    killed_at = _epochs_checkpointed(env)
    proc = _start(env, study)  # the retry resumes, then a scheduler's SIGTERM arrives
    _wait_for_epochs(env, proc, killed_at + 1)
    assert stop_mid_trial(proc.pid, lambda: _epochs_checkpointed(env) < 4, signal.SIGTERM), "ended before SIGTERM"
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert f"trial 1: resumes trial 0 at epoch {killed_at + 1}" in out
    terminated_at = _epochs_checkpointed(env)
    assert main(sweep_args(env, study)) == 0

    trials = env_optuna(env).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert trials[0].user_attrs["reason"] == "worker died (stale trial)"
    assert trials[1].user_attrs["reason"] == "terminated (SIGTERM)"
    assert [t.user_attrs.get("resumed_at_epoch") for t in trials] == [None, killed_at + 1, terminated_at + 1]
    assert trials[2].user_attrs["resumed_from_trial"] == 1 and trials[2].params == straight.params
    assert trials[2].value == straight.value and trials[2].user_attrs["scores"] == straight.user_attrs["scores"]
    # The pruner saw the whole probe history on the trial that finished.
    assert sorted(trials[2].intermediate_values) == [1, 2, 3, 4]
    assert trials[2].intermediate_values == straight.intermediate_values

    client, _, runs = env_runs(env)
    assert len(runs) == 1  # the retries continued the first trial's run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "COMPLETE"
    assert run.data.tags["vicreg.trial"] == "2" and run.data.tags["resumed_from_trial"] == "1"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == [1, 2, 3, 4]
    assert not list((env["dir"] / "runs" / "checkpoints").glob("*/last.pt"))  # a completed trial's go


@pytest.mark.slow
def test_max_time_stops_at_the_limit_and_loses_nothing(env, capsys) -> None:
    study = write_study(env["dir"], env["root"], budget={"trials": 3})
    t0 = time.time()
    assert main(sweep_args(env, study, "--max-time", "3")) == 0
    assert time.time() - t0 < 20
    before = env_optuna(env).trials
    assert all(t.state.name != "RUNNING" for t in before)
    stopped = [t for t in before if t.state.name == "FAIL"]
    assert all(t.user_attrs["reason"] == "time limit (--max-time)" for t in stopped)
    _, parents, runs = env_runs(env)
    assert all(r.info.status != "RUNNING" for r in parents + runs)
    assert main(sweep_args(env, study)) == 0  # the next start resumes the stopped trial and finishes
    after = env_optuna(env).trials
    complete = [t for t in after if t.state.name == "COMPLETE"]
    assert len(complete) == 3
    assert {t.number for t in before if t.state.name == "COMPLETE"} <= {t.number for t in complete}
    assert all(t.user_attrs.get("resumed_from_trial") is not None for t in after if t.user_attrs.get("retry_of"))


@pytest.mark.slow
def test_scheduler_files_run_the_sweep(env) -> None:
    """scripts/sweep.sbatch runs as SLURM would run it (here as a --dry-run on a journal), and
    the Kubernetes Job's command is one our command line accepts, for a study that loads."""
    from sweeps.gpu_share import gpu_list, worker_gpus
    from sweeps.run import parse_args
    from sweeps.study import load_study, study_path

    repo = Path(RUN_PY).parents[1]
    venv_bin = str(Path(sys.executable).parent)
    run = subprocess.run(
        ["bash", str(repo / "scripts" / "sweep.sbatch"), "--set", f"data.cache_dir={env['dir'] / 'cache'}"],
        cwd=repo, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "DRY_RUN": "1", "STUDY": "demo",
             "STORAGE": f"journal:{env['dir'] / 'j.log'}", "SWEEP_OUT": str(env["dir"] / "runs"),
             "DATA_ROOT": str(env["root"]), "MLFLOW_TRACKING_URI": env["uri"]})
    assert run.returncode == 0, run.stdout + run.stderr
    journal = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(env["dir"] / "j.log")))
    trials = optuna.load_study(study_name="demo-dryrun", storage=journal).trials
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 8  # its --dry-run --trials 8 ran
    # The demo study asks for Optuna's plots, but a dry run's values are made up: it draws none.
    client, parents, _ = study_runs(env["uri"], "demo-dryrun")
    assert len(parents) == 1 and "optuna" not in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    # Its multi-GPU-per-trial variant: the command it runs makes two 2-GPU groups. A stand-in
    # `python` first on the PATH writes its argv: the sweep above ran the script for real, and the
    # launcher's groups on a CPU are tests/sweeps/test_group.py's.
    stub = env["dir"] / "stub"
    stub.mkdir()
    (stub / "python").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {env['dir'] / 'argv.txt'}\n")
    (stub / "python").chmod(0o755)
    run = subprocess.run(
        ["bash", str(repo / "scripts" / "sweep.sbatch")], cwd=repo, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "STUDY": "demo", "STORAGE": "journal:j.log",
             "GPUS": "4", "GPUS_PER_TRIAL": "2"})
    assert run.returncode == 0, run.stdout + run.stderr
    script, *argv = (env["dir"] / "argv.txt").read_text().splitlines()
    args = parse_args(argv)
    assert script == "sweeps/run.py" and args.study == "demo" and args.storage == "journal:j.log"
    assert worker_gpus(gpu_list(args.gpus), args.per_gpu, args.gpus_per_trial) == ["0,1", "2,3"]
    for name, gpus in (("sweep-job.yaml", 1), ("sweep-job-multigpu.yaml", 4)):
        job = yaml.safe_load((repo / "scripts" / name).read_text())
        # Kubernetes accepts backoffLimitPerIndex (each worker's pod retried on its own) only in an Indexed Job.
        assert "backoffLimitPerIndex" not in job["spec"] or job["spec"]["completionMode"] == "Indexed"
        container = job["spec"]["template"]["spec"]["containers"][0]
        command = container["command"]
        assert command[:2] == ["python", "sweeps/run.py"]
        args = parse_args(command[2:])
        assert args.max_time and args.out.startswith("/shared/") and args.storage.startswith("postgresql://")
        assert load_study(study_path(args.study)).name == args.study
        # the pod's GPUs are the trial's: one group of --gpus-per-trial over the listed --gpus
        assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus == args.gpus_per_trial
        assert len(gpu_list(args.gpus)) == gpus if args.gpus else gpus == 1


@pytest.mark.slow
def test_two_workers_on_the_default_storage(env, capfd) -> None:
    # --gpus 0,1 is --workers 2 with CUDA_VISIBLE_DEVICES set per worker (checked on a CPU).
    # Trials of one epoch: long enough that the second worker, still starting, is left some.
    study = write_study(env["dir"], env["root"], budget={"trials": 4})
    assert main(sweep_args(env, study, "--gpus", "0,1", "--set", "train.epochs=1")) == 0
    out = capfd.readouterr()
    assert "database is locked" not in out.out + out.err
    trials = env_optuna(env).trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 4
    assert len({t.number for t in trials}) == len(trials)
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert {(t.user_attrs["worker"], t.user_attrs["cuda_visible_devices"]) for t in trials} == {(0, "0"), (1, "1")}
    _, parents, runs = env_runs(env)
    assert len(parents) == 1 and len(runs) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in runs)


@pytest.mark.parametrize("change,match", [
    ({"colour": 1}, r"unknown key 'colour'"),
    ({"search": {"optim.lrr": {"float": [0.1, 1.0]}}}, r"search entry 'optim.lrr' is not a config key"),
    ({"search": {"optim.lr": {"float": [0.1, 0.1]}}}, r"search entry 'optim.lr': empty range \[0.1, 0.1\]"),
    ({"search": {"optim.lr": {"float": [0.0, 0.1], "log": True}}}, r"'optim.lr': a log range needs low > 0"),
    ({"search": {"optim.lr": {"float": ["a", 0.1]}}}, r"'optim.lr': bounds must be numbers"),
    ({"search": {"data.batch_size": {"choice": []}}}, r"'data.batch_size': choice needs a non-empty list"),
    ({"search": {"data.batch_size": {"choice": [16, "big"]}}},
     r"'data.batch_size': value 'big' is invalid .*expected an integer"),
    ({"search": {"optim.lr": {"uniform": [0.1, 1]}}}, r"'optim.lr': needs exactly one of float/int/choice"),
    ({"search": {"optim.name": {"choice": ["adam", "rmsprop"]}}}, r"'optim.name': value 'rmsprop' is invalid"),
    ({"objective": {"metric": "loss"}}, r"objective.metric='loss' must be kappa_mean"),
    ({"sampler": {"name": "bayes"}}, r"sampler.name='bayes' must be tpe"),
    ({"budget": {"trials": 0}}, r"budget.trials must be an integer >= 1"),
    ({"base": {"optim": {"lrr": 1}}}, r"unknown key 'optim.lrr'"),
    ({"search": {"train.epochs": {"choice": [2, 4]}}, "budget": {"trials": 2, "epochs": 3}},
     r"budget.epochs fixes train.epochs, which the search also sets"),
    ({"search": {"augment.blur_p_a": {"float": [0.0, 1.5]}}},
     r"'augment.blur_p_a': value 1.5 is invalid .*probability"),
])
def test_bad_study_files_are_one_line_errors(env, capsys, change: dict, match: str) -> None:
    study = write_study(env["dir"], env["root"], **change)
    assert main(sweep_args(env, study)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(study) in err
    import re

    assert re.search(match, err), err
    assert not (env["dir"] / "runs").exists()


def test_drac22_without_data_points_to_the_demo(env, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DRAC22_ROOT", raising=False)
    assert main(["--study", "drac22", "--tracking-uri", env["uri"]]) == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and "--study demo" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag, value, match", [
    ("--storage", "postgresql://vicreg:s3cret@127.0.0.1:1/optuna", "cannot open the Optuna storage "
                                                                    "postgresql://vicreg:***@127.0.0.1:1/optuna"),
    ("--tracking-uri", "http://127.0.0.1:1", "cannot open the MLflow tracking store http://127.0.0.1:1: no answer"),
])
def test_unreachable_servers_are_one_line_errors(env, capsys, flag: str, value: str, match: str) -> None:
    study = write_study(env["dir"], env["root"])
    args = ["--config", str(study), "--out", str(env["dir"] / "runs")]
    args += [flag, value] if flag == "--tracking-uri" else [flag, value, "--tracking-uri", env["uri"]]
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and match in err[0] and "s3cret" not in err[0], err


def test_imagenet_start_needs_a_file_and_set_fixes_a_searched_key(env, capsys, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(env["dir"] / "torch-home"))  # an empty hub cache
    # Set (empty: unset for the lookup) so that monkeypatch restores it after --imagenet-weights
    # below has set it for this process: the next tests must not see a weights file.
    monkeypatch.setenv("VICREG_IMAGENET_WEIGHTS", "")
    study = write_study(env["dir"], env["root"], budget={"trials": 4}, search={
        "model.init": {"choice": ["random", "imagenet"]},
        "optim.name": {"choice": ["adam", "sgd"]},
        "optim.lr": {"by": "optim.name", "adam": {"float": [1e-4, 1e-3], "log": True},
                     "sgd": {"float": [1e-3, 1e-1], "log": True}},
        "augment.crop_min_scale": {"float": [0.08, 0.8]}})
    assert main(sweep_args(env, study, "--dry-run")) == 2  # before any trial starts
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(study) in err and "--set model.init=random" in err, err
    assert "model.init=imagenet: no weights file for resnet18" in err and not (env["dir"] / "runs").exists()

    assert main(sweep_args(env, study, "--dry-run", "--set", "model.init=random", "--set", "optim.name=adam")) == 0
    assert "--set fixes model.init, optim.name: not searched" in capsys.readouterr().out
    trials = env_optuna(env, "tiny-dryrun").trials
    assert all(set(t.params) == {"optim.lr[adam]", "augment.crop_min_scale"} for t in trials)
    _, _, runs = env_runs(env, "tiny-dryrun")
    for r in runs:  # the whole recipe and the start are run params
        assert r.data.params["model.init"] == "random" and r.data.params["augment.flip_p"] == "0.5"
        assert 0.08 <= float(r.data.params["augment.crop_min_scale"]) <= 0.8

    weights = env["dir"] / "r18.pth"
    weights.write_bytes(b"stand-in: a dry run never loads it")
    assert main(sweep_args(env, study, "--dry-run", "--trials", "8", "--imagenet-weights", str(weights))) == 0
    by_init = {}
    for r in env_runs(env, "tiny-dryrun")[2]:
        by_init.setdefault(r.data.params["model.init"], set()).add(r.data.params["model.weights"])
    assert by_init == {"random": {"None"}, "imagenet": {str(weights)}}, by_init


@pytest.mark.slow
def test_database_storage_records_heartbeats(env) -> None:
    # The RDB path (PostgreSQL in production) with a single-process SQLite URL: trials run
    # with Optuna's heartbeat thread, as study.optimize would give them.
    study = write_study(env["dir"], env["root"], budget={"trials": 2})
    url = f"sqlite:///{env['dir'] / 'optuna.db'}"
    assert main(sweep_args(env, study, "--storage", url)) == 0
    loaded = optuna.load_study(study_name="tiny", storage=url)
    assert [t.state.name for t in loaded.trials] == ["COMPLETE", "COMPLETE"]
    import sqlite3

    with sqlite3.connect(env["dir"] / "optuna.db") as db:
        assert db.execute("select count(*) from trial_heartbeats").fetchone()[0] == 2
    _, parents, _ = env_runs(env)
    assert parents[0].data.params["storage"] == url
