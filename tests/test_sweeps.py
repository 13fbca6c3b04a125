"""The sweep harness end to end on tiny studies: MLflow runs and statuses, pruning,
divergence, resume, Ctrl-C, kill -9, two workers, and every bad study file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from scipy import stats

from sweeps import optuna_compat
from sweeps.run import main
from sweeps.tracking import mask_url
from tests.helpers import RUN_PY, journal_study, stop_mid_trial, study_runs, write_study


@pytest.fixture()
def env(tmp_path: Path, synthetic_root: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # mlruns/ and runs/ land here
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return {"dir": tmp_path, "root": synthetic_root, "uri": uri}


def _args(env, study: Path, *extra: str) -> list[str]:
    return ["--config", str(study), "--tracking-uri", env["uri"], "--out", str(env["dir"] / "runs"), *extra]


def _runs(env, name: str = "tiny"):
    return study_runs(env["uri"], name)


def _optuna(env, name: str = "tiny") -> optuna.Study:
    return journal_study(env["dir"] / "runs", name)


def test_three_trials_tracked_then_resumed_to_four(env, capsys) -> None:
    study = write_study(env["dir"], env["root"], log_checkpoint=True, log_plots=True)
    assert main(_args(env, study)) == 0
    client, parents, trials = _runs(env)
    assert len(parents) == 1 and len(trials) == 3
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
    opt = _optuna(env)
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

    # Resume: --trials is the total; the parent run is found again, not duplicated.
    assert main(_args(env, study, "--trials", "4")) == 0
    _, parents, trials = _runs(env)
    assert len(parents) == 1 and len(trials) == 4
    resumed = _optuna(env).trials
    assert len(resumed) == 4
    assert resumed[3].params not in [t.params for t in resumed[:3]]  # the sampler did not start over
    capsys.readouterr()
    assert main(["--config", str(study), "--best"]) == 0
    out = capsys.readouterr().out
    assert "rank trial" in out and "rerun the best: vicreg pretrain --config" in out


def test_pruned_trials_are_killed_with_their_tag(env) -> None:
    study = write_study(env["dir"], env["root"], pruner={"name": "threshold", "lower": 2.0},
                        budget={"trials": 2})
    assert main(_args(env, study)) == 0
    _, _, trials = _runs(env)
    assert len(trials) == 2
    for r in trials:
        assert r.info.status == "KILLED" and r.data.tags["state"] == "PRUNED"
        assert r.data.tags["pruned_epoch"] == "1"
    assert [t.state.name for t in _optuna(env).trials] == ["PRUNED", "PRUNED"]


def test_a_diverging_trial_does_not_stop_the_sweep(env) -> None:
    # An invariance weight past float32's range (finite, so the config accepts it: an infinite one
    # is refused) makes the very first loss non-finite: the real diverged path.
    study = write_study(env["dir"], env["root"], search={"loss.sim_coeff": {"choice": [1e300, 25.0]}},
                        sampler={"name": "grid"}, budget={"trials": 2})
    assert main(_args(env, study)) == 0
    trials = {t.params["loss.sim_coeff"]: t for t in _optuna(env).trials}
    assert trials[1e300].state.name == "PRUNED"
    assert "non-finite loss at step 0" in trials[1e300].user_attrs["reason"]
    assert trials[1e300].constraints == {"diverged": 1.0}  # infeasible: TPE counts it as bad
    assert trials[25.0].state.name == "COMPLETE" and trials[25.0].constraints == {}
    _, _, runs = _runs(env)
    assert sorted(r.data.tags["state"] for r in runs) == ["COMPLETE", "PRUNED"]


def _start(env, study: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, RUN_PY, *_args(env, study, *extra)], cwd=env["dir"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_running_trial(env, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.stdout.read()
        try:
            _, _, trials = _runs(env)
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
    _, parents, trials = _runs(env)
    assert all(r.info.status != "RUNNING" for r in parents + trials)
    assert trials[0].info.status == "KILLED" and trials[0].data.tags["state"] == "INTERRUPTED"
    t = _optuna(env).trials[0]
    assert t.state.name == "FAIL" and "interrupted" in t.user_attrs["reason"]


def _epochs_checkpointed(env) -> int:
    """Epochs in the (one) trial checkpoint under runs/checkpoints; 0 when there is none yet."""
    import torch

    for path in (env["dir"] / "runs" / "checkpoints").glob("trial*/last.pt"):
        try:
            return len(torch.load(path, map_location="cpu", weights_only=True)["history"])
        except Exception:  # replaced (atomically) while we read
            return 0
    return 0


def _wait_for_epochs(env, proc: subprocess.Popen, n: int, timeout: float = 180) -> None:
    t0 = time.time()
    while _epochs_checkpointed(env) < n:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < timeout, f"no checkpoint of {n} epochs"
        time.sleep(0.05)


def _six_epochs(env, name: str, **over) -> Path:
    """A 1-trial study of 6 epochs at 32 px: long enough per epoch that only the kill ends it."""
    study = write_study(env["dir"], env["root"], name=name, **{"budget": {"trials": 1}, **over})
    doc = yaml.safe_load(study.read_text())
    doc["base"]["train"]["epochs"] = 6
    doc["base"]["data"]["image_size"] = 32
    study.write_text(yaml.safe_dump(doc))
    return study


@pytest.mark.slow
def test_killed_and_terminated_trials_resume_where_they_stopped(env) -> None:
    """kill -9 after epoch 3, restart; SIGTERM a few epochs later, restart: each retry resumes
    from the last checkpoint, the pruner sees the stored probe values, MLflow holds epochs 1-6
    once in one run, and the scores equal an uninterrupted run's (bit-identical on CPU)."""
    reference = _six_epochs(env, "ref")
    assert main(_args(env, reference, "--out", str(env["dir"] / "ref-runs"), "--no-tracking")) == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(env["dir"] / "ref-runs" / "optuna.journal")))
    straight = optuna.load_study(study_name="ref", storage=storage).trials[0]

    study = _six_epochs(env, "tiny")
    proc = _start(env, study)
    _wait_for_epochs(env, proc, 3)
    # Frozen first, so that the trial cannot finish between our look and the kill.
    assert stop_mid_trial(proc.pid, lambda: _epochs_checkpointed(env) < 6), "the trial ended before the kill"
    proc.wait()
    killed_at = _epochs_checkpointed(env)
    proc = _start(env, study)  # the retry resumes, then a scheduler's SIGTERM arrives
    _wait_for_epochs(env, proc, killed_at + 1)
    assert stop_mid_trial(proc.pid, lambda: _epochs_checkpointed(env) < 6, signal.SIGTERM), "ended before SIGTERM"
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert f"trial 1: resumes trial 0 at epoch {killed_at + 1}" in out
    terminated_at = _epochs_checkpointed(env)
    assert main(_args(env, study)) == 0

    trials = _optuna(env).trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL", "COMPLETE"]
    assert trials[0].user_attrs["reason"] == "worker died (stale trial)"
    assert trials[1].user_attrs["reason"] == "terminated (SIGTERM)"
    assert [t.user_attrs.get("resumed_at_epoch") for t in trials] == [None, killed_at + 1, terminated_at + 1]
    assert trials[2].user_attrs["resumed_from_trial"] == 1 and trials[2].params == straight.params
    assert trials[2].value == straight.value and trials[2].user_attrs["scores"] == straight.user_attrs["scores"]
    # The pruner saw the whole probe history on the trial that finished.
    assert sorted(trials[2].intermediate_values) == [1, 2, 3, 4, 5, 6]
    assert trials[2].intermediate_values == straight.intermediate_values

    client, _, runs = _runs(env)
    assert len(runs) == 1  # the retries continued the first trial's run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "COMPLETE"
    assert run.data.tags["vicreg.trial"] == "2" and run.data.tags["resumed_from_trial"] == "1"
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == [1, 2, 3, 4, 5, 6]
    assert not list((env["dir"] / "runs" / "checkpoints").glob("*/last.pt"))  # a completed trial's go


@pytest.mark.slow
def test_max_time_stops_at_the_limit_and_loses_nothing(env, capsys) -> None:
    study = write_study(env["dir"], env["root"], budget={"trials": 3})
    t0 = time.time()
    assert main(_args(env, study, "--max-time", "3")) == 0
    assert time.time() - t0 < 20
    before = _optuna(env).trials
    assert all(t.state.name != "RUNNING" for t in before)
    stopped = [t for t in before if t.state.name == "FAIL"]
    assert all(t.user_attrs["reason"] == "time limit (--max-time)" for t in stopped)
    _, parents, runs = _runs(env)
    assert all(r.info.status != "RUNNING" for r in parents + runs)
    assert main(_args(env, study)) == 0  # the next start resumes the stopped trial and finishes
    after = _optuna(env).trials
    complete = [t for t in after if t.state.name == "COMPLETE"]
    assert len(complete) == 3
    assert {t.number for t in before if t.state.name == "COMPLETE"} <= {t.number for t in complete}
    assert all(t.user_attrs.get("resumed_from_trial") is not None for t in after if t.user_attrs.get("retry_of"))


@pytest.mark.slow
def test_scheduler_files_run_the_sweep(env) -> None:
    """scripts/sweep.sbatch runs as SLURM would run it (here as a --dry-run on a journal), and
    the Kubernetes Job's command is one our command line accepts, for a study that loads."""
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
    job = yaml.safe_load((repo / "scripts" / "sweep-job.yaml").read_text())
    assert job["spec"]["completionMode"] == "Indexed"
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["python", "sweeps/run.py"]
    args = parse_args(command[2:])
    assert args.max_time and args.out.startswith("/shared/") and args.storage.startswith("postgresql://")
    assert load_study(study_path(args.study)).name == args.study


@pytest.mark.slow
def test_two_workers_on_the_default_storage(env, capfd) -> None:
    # --gpus 0,1 is --workers 2 with CUDA_VISIBLE_DEVICES set per worker (checked on a CPU).
    study = write_study(env["dir"], env["root"], budget={"trials": 4})
    assert main(_args(env, study, "--gpus", "0,1")) == 0
    out = capfd.readouterr()
    assert "database is locked" not in out.out + out.err
    trials = _optuna(env).trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 4
    assert len({t.number for t in trials}) == len(trials)
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}
    assert {(t.user_attrs["worker"], t.user_attrs["cuda_visible_devices"]) for t in trials} == {(0, "0"), (1, "1")}
    _, parents, runs = _runs(env)
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
    assert main(_args(env, study)) == 2
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


@pytest.mark.parametrize("url", [
    "postgresql://vicreg:s3cret@db:5432/optuna", "postgresql+psycopg2://u:s3cret@h/d",
    "postgresql://db/optuna?user=u&password=s3cret", "postgresql://db/optuna?sslpassword=s3cret&connect_timeout=5",
    "postgresql://:s3cret@db/optuna", "postgresql://u:s3@cret@db/optuna", "postgresql://u:s3/cret@db/optuna",
    "postgresql://u:s3?cret@db/optuna", "postgresql:/u:s3cret@db/optuna", "postgresql//u:s3cret@db/optuna",
    "mysql://u:s3cret@h:notaport/d", "http://u:s3cret@mlflow:5000"])
def test_no_password_survives_masking(url: str) -> None:
    """Every URL form the review found leaking: the printed form and the stored param hold no
    part of the password; the stored param holds no user name either."""
    from sweeps.text import describe_url

    for shown in (mask_url(url), describe_url(url)):
        assert "s3" not in shown and "cret" not in shown, shown
    assert "vicreg" not in describe_url(url)


def test_masking_keeps_what_is_not_secret() -> None:
    from sweeps.text import UNPARSED, describe_url

    assert mask_url("postgresql://vicreg:s3cret@db:5432/optuna") == "postgresql://vicreg:***@db:5432/optuna"
    assert mask_url("postgresql://vicreg@db/optuna") == "postgresql://vicreg@db/optuna"
    assert mask_url("postgresql://u:p@db/o?connect_timeout=5&password=x") == "postgresql://u:***@db/o?connect_timeout=5"
    assert mask_url("postgresql:/u:s3cret@db/optuna") == UNPARSED
    for plain in ("sqlite:///mlflow.db", "journal:runs/demo.log", "/tmp/journal.log", None):
        assert mask_url(plain) == plain
    assert describe_url("postgresql://vicreg:s3cret@db:5432/optuna") == "postgresql://db:5432/optuna"
    assert describe_url("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"
    assert describe_url(None) == "journal (embedded)"


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


def test_shipped_studies_load() -> None:
    from sweeps.study import load_study, study_path

    for name in ("demo", "drac22", "cifar10"):
        s = load_study(study_path(name))
        assert s.search and s.budget.trials >= 1
    keys = {d.key for d in load_study(study_path("drac22")).search}
    assert keys == {"optim.lr", "data.batch_size", "model.expander_hidden", "optim.weight_decay",
                    "data.image_size", "optim.name", "model.init", "train.epochs", "optim.warmup_fraction",
                    "data.include_test_in_pretrain", "augment.crop_min_scale", "augment.flip_p",
                    "augment.jitter_strength", "augment.blur_p_a", "augment.solarize_p_b"}
    assert any(d.key.startswith("augment.") for d in load_study(study_path("demo")).search)
    drac22 = load_study(study_path("drac22"))
    # Hyperband spans the top of the searched epochs.
    assert optuna_compat.hyperband_max_resource(drac22.make_pruner()) == drac22.max_epochs == 200
    for name in ("demo", "drac22", "cifar10"):  # each optimiser its own learning-rate range
        lr = next(d for d in load_study(study_path(name)).search if d.key == "optim.lr")
        assert lr.kind == "by" and lr.by == "optim.name" and set(lr.cases) == {"lars", "sgd", "adam"}


def test_learning_rate_range_follows_the_optimiser(env) -> None:
    study = write_study(env["dir"], env["root"], budget={"trials": 6}, search={
        "optim.name": {"choice": ["adam", "lars"]},
        "optim.lr": {"by": "optim.name", "adam": {"float": [1e-4, 1e-3], "log": True},
                     "lars": {"float": [0.1, 1.0], "log": True}}})
    doc = yaml.safe_load(study.read_text())
    doc["base"]["train"]["epochs"] = 1
    study.write_text(yaml.safe_dump(doc))
    assert main(_args(env, study, "--dry-run")) == 0
    assert not (env["dir"] / "best").exists()  # a dry run leaves no best-configurations file
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(env["dir"] / "runs" / "optuna.journal")))
    trials = optuna.load_study(study_name="tiny-dryrun", storage=storage).trials
    assert {t.params["optim.name"] for t in trials} == {"adam", "lars"}
    for t in trials:
        name = t.params["optim.name"]
        lr = t.params[f"optim.lr[{name}]"]
        assert (1e-4 <= lr <= 1e-3) if name == "adam" else (0.1 <= lr <= 1.0)
        assert t.user_attrs["config"]["optim.lr"] == lr  # the trainer gets it under optim.lr
    client = MlflowClient(env["uri"])
    runs = client.search_runs([client.get_experiment_by_name("tiny-dryrun").experiment_id],
                              "tags.`vicreg.role` = 'trial'")
    assert all(r.data.params["optim.lr"] for r in runs)


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
    assert main(_args(env, study, "--dry-run")) == 2  # before any trial starts
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(study) in err and "--set model.init=random" in err, err
    assert "model.init=imagenet: no weights file for resnet18" in err and not (env["dir"] / "runs").exists()

    assert main(_args(env, study, "--dry-run", "--set", "model.init=random", "--set", "optim.name=adam")) == 0
    assert "--set fixes model.init, optim.name: not searched" in capsys.readouterr().out
    trials = _optuna(env, "tiny-dryrun").trials
    assert all(set(t.params) == {"optim.lr[adam]", "augment.crop_min_scale"} for t in trials)
    _, _, runs = _runs(env, "tiny-dryrun")
    for r in runs:  # the whole recipe and the start are run params
        assert r.data.params["model.init"] == "random" and r.data.params["augment.flip_p"] == "0.5"
        assert 0.08 <= float(r.data.params["augment.crop_min_scale"]) <= 0.8

    weights = env["dir"] / "r18.pth"
    weights.write_bytes(b"stand-in: a dry run never loads it")
    assert main(_args(env, study, "--dry-run", "--trials", "8", "--imagenet-weights", str(weights))) == 0
    by_init = {}
    for r in _runs(env, "tiny-dryrun")[2]:
        by_init.setdefault(r.data.params["model.init"], set()).add(r.data.params["model.weights"])
    assert by_init == {"random": {"None"}, "imagenet": {str(weights)}}, by_init


@pytest.mark.parametrize("search, match", [
    ({"optim.lr": {"by": "optim.name", "adam": {"float": [1e-4, 1e-3]}}}, "must name a choice entry of the search"),
    ({"optim.name": {"choice": ["adam", "sgd"]}, "optim.lr": {"by": "optim.name", "adam": {"float": [1e-4, 1e-3]}}},
     "needs one range for each choice of optim.name"),
])
def test_bad_conditional_entries_are_one_line_errors(env, capsys, search, match) -> None:
    study = write_study(env["dir"], env["root"], search=search)
    assert main(_args(env, study)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err


@pytest.mark.slow
def test_database_storage_records_heartbeats(env) -> None:
    # The RDB path (PostgreSQL in production) with a single-process SQLite URL: trials run
    # with Optuna's heartbeat thread, as study.optimize would give them.
    study = write_study(env["dir"], env["root"], budget={"trials": 2})
    url = f"sqlite:///{env['dir'] / 'optuna.db'}"
    assert main(_args(env, study, "--storage", url)) == 0
    loaded = optuna.load_study(study_name="tiny", storage=url)
    assert [t.state.name for t in loaded.trials] == ["COMPLETE", "COMPLETE"]
    import sqlite3

    with sqlite3.connect(env["dir"] / "optuna.db") as db:
        assert db.execute("select count(*) from trial_heartbeats").fetchone()[0] == 2
    _, parents, _ = _runs(env)
    assert parents[0].data.params["storage"] == url


NULL_IMAGES, NULL_HOLDOUT, NULL_FOLDS = 400, 0.4, 3
NULL_SETS = {"shuffle_labels": True, "holdout": NULL_HOLDOUT, "batch_size": 32, "folds": NULL_FOLDS}
NULL_EVAL = {"baselines": True, "epochs": 60, "lr": 1e-2}


def _null_root(tmp_path_factory) -> Path:
    from vicreg.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("null") / "d"
    make_synthetic(root, count=NULL_IMAGES, size=48, seed=3, test_count=0)
    return root


def _null_study(env, tmp_path_factory, seeds: int) -> Path:
    """The null test's study: labels permuted, so no encoder can predict them; 400 synthetic
    images, 160 in the hold-out; heads trained long enough to memorise their training images
    (a linear layer on standardised 512-d features of 240 images, 60 epochs at lr 1e-2), so
    that any image the head trains on and is then scored on shows."""
    study = write_study(env["dir"], _null_root(tmp_path_factory), confirm={"top_k": 1, "seeds": seeds},
                        budget={"trials": 2}, log_checkpoint=False)
    doc = yaml.safe_load(study.read_text())
    doc["base"]["data"].update(NULL_SETS)
    doc["base"]["eval"].update(NULL_EVAL)
    doc["base"]["train"]["epochs"] = 1
    study.write_text(yaml.safe_dump(doc))
    return study


def _permuted_kappas(labels: list[np.ndarray], preds: list[np.ndarray], draws: int,
                     rng: np.random.Generator) -> np.ndarray:
    """(draws,): the mean over the (labels, preds) pairs of kappa with each pair's labels
    permuted; pairs with the same label vector object share the permutation (one hold-out
    scored by every seed), the others are permuted apart (different images)."""
    from vicreg.verdict import scores_of

    c, out, perms = 3, np.zeros(draws), {}
    for y, p in zip(labels, preds):
        if id(y) not in perms:
            perms[id(y)] = rng.permuted(np.tile(y, (draws, 1)), axis=1)
        cell = (np.arange(draws)[:, None] * c + perms[id(y)]) * c + p[None]
        out += scores_of(np.bincount(cell.ravel(), minlength=draws * c * c).reshape(draws, c, c), "kappa")
    return out / len(labels)


def _null_bounds(reports: list, draws: int = 4000) -> dict[str, float]:
    """Bounds on VICReg's mean hold-out and CV kappa when labels say nothing, measured on these
    runs' own predictions by permuting their labels again (the null distribution given how
    often each grade is predicted, imbalance included): the 99.7% quantile of |kappa| (a
    correct tool fails about 0.003 of the time), and the leak that exceeds it with 80% power,
    bound + 0.84 null SD. The hold-out's pairs share one label vector (every seed scores the
    same images); the CV's are each seed's folds, rebuilt from the fold confusion matrices,
    and the largest bound over seeds is kept (a mean over seeds is no noisier than its seeds)."""
    rng = np.random.default_rng(0)
    y = np.asarray(reports[0].holdout_labels)
    hold = _permuted_kappas([y] * len(reports), [np.asarray(r.holdout_probs).argmax(1) for r in reports], draws, rng)
    cv = []
    for r in reports:
        confs = [np.asarray(f.metrics["confusion"]).astype(int) for f in r.folds]
        cv.append(_permuted_kappas([np.repeat(np.arange(3), m.sum(1)) for m in confs],
                                   [np.repeat(np.arange(3), m.sum(0)) for m in confs], draws, rng))
    z80 = stats.norm.ppf(0.8)
    hold_bound = float(np.quantile(np.abs(hold), 0.997))
    cv_bound = max(float(np.quantile(np.abs(x), 0.997)) for x in cv)
    return {"holdout": hold_bound, "cv": cv_bound, "holdout_leak80": hold_bound + z80 * float(hold.std()),
            "cv_leak80": cv_bound + z80 * max(float(x.std()) for x in cv)}


def _confirmed_reports(out: Path, label: str = "vicreg") -> list:
    from vicreg.evaluate import EvalReport

    runs = [json.loads(p.read_text()) for p in sorted((out / "confirm").glob("trial*-seed*.json"))]
    return [EvalReport.from_dict(d) for r in runs for d in r["reports"] if d["label"] == label]


@pytest.mark.slow
def test_null_sweep_with_permuted_labels_confirms_nothing(env, tmp_path_factory, capsys, report) -> None:
    """The null test: a 2-trial sweep on permuted labels, then the confirm stage (best
    configuration, 2 fresh seeds, then a 3rd on demand). Its confirmed CV and hold-out kappa
    must be inside the bounds of the null distribution measured on its own predictions
    (_null_bounds), and the primary verdict may not say pretraining helped.

    Its power, measured when written (160 hold-out images x 3 seeds, 240 CV images in 3 folds):
    bounds 0.13 (hold-out) and 0.20 (CV); a leak that adds +0.17 to the hold-out kappa or +0.25
    to the CV kappa is caught with 80% power; a leak into VICReg alone is called "helped" with
    80% power only from the verdict's detectable effect, 0.37 kappa here (3 seeds). Smaller
    leaks can pass: this test catches gross leaks only. Its positive control:
    test_a_vicreg_only_leak_makes_the_null_test_fail."""
    study = _null_study(env, tmp_path_factory, seeds=2)
    assert main(_args(env, study)) == 0
    out = capsys.readouterr().out
    assert "confirmed: top 1 configurations pretrained again with 2 seeds" in out
    client, parents, trials = _runs(env)
    exp = client.get_experiment_by_name("tiny")
    assert len(client.search_runs([exp.experiment_id], "tags.stage = 'confirm'")) == 2
    # On demand, resumed: the 2 stored confirm runs are reused, a 3rd seed adds one run.
    assert main(_args(env, study, "--confirm", "--seeds", "3")) == 0
    out = capsys.readouterr().out
    best = yaml.safe_load((env["dir"] / "best" / "tiny.yaml").read_text())
    (top,) = best["confirmed"]
    vic = top["scores"]["vicreg"]
    reports = _confirmed_reports(env["dir"] / "runs")
    bounds = _null_bounds(reports)
    assert len(reports) == 3
    report(f"null test (permuted labels): confirmed hold-out kappa {vic['holdout_kappa']:+.3f} (bound "
           f"{bounds['holdout']:.3f}; a leak of {bounds['holdout_leak80']:+.2f} is caught with 80% power), CV "
           f"{vic['cv_kappa']:+.3f} (bound {bounds['cv']:.3f}; {bounds['cv_leak80']:+.2f}); {best['primary_verdict']}")
    assert abs(vic["holdout_kappa"]) < bounds["holdout"], (vic, bounds)
    assert abs(vic["cv_kappa"]) < bounds["cv"], (vic, bounds)
    assert top["seeds"] == 3 and {"random-init", "raw-pixels"} <= set(top["scores"])
    assert [line.split(":")[0] for line in best["verdict"]] == [
        "pretraining vs random-init on the hold-out", "pretraining vs raw-pixels on the hold-out"]
    assert [line.split(":")[0] for line in best["cv_verdict"]] == [
        "pretraining vs random-init on the selection folds (optimistic)",
        "pretraining vs raw-pixels on the selection folds (optimistic)"]
    assert best["primary_verdict"].startswith("verdict: pretraining ")
    assert not best["primary_verdict"].startswith("verdict: pretraining helped")
    assert re.search(r"^quote: hold-out kappa [-.\d]+ \(95% CI [-.\d]+\.\.[-.\d]+, 160 images x 3 seeds\)",
                     out, re.M)
    assert "confirmed: top 1 configurations pretrained again with 3 seeds" in out
    assert "baselines on the same CV folds and head seed, no pretraining: random-init CV kappa" in out
    assert "but not the hold-out's: the CV verdict includes that advantage" in out
    for line in [best["primary_verdict"], *best["verdict"], *best["cv_verdict"]]:
        assert line in out
    # MLflow: 3 confirm runs under the parent, apart from the 2 trials; the verdicts on the parent.
    client, parents, trials = _runs(env)
    assert len(trials) == 2 and len(_optuna(env).trials) == 2
    confirm = client.search_runs([exp.experiment_id], "tags.stage = 'confirm'")
    assert len(confirm) == 3 and all(r.info.status == "FINISHED" for r in confirm)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in confirm)
    assert all("kappa_holdout" in r.data.metrics for r in confirm)
    assert all("kappa_holdout" not in r.data.metrics for r in trials)  # no trial ever scores it
    # Fresh seeds: none replays the trials' seed 0, and each run records both.
    assert {r.data.params["train.seed"] for r in confirm} == {"1000", "1001", "1002"}
    assert {r.data.params["trial_seed"] for r in confirm} == {"0"}
    assert {r.data.params["train.seed"] for r in trials} == {"0"}
    parent = client.get_run(parents[0].info.run_id)
    assert parent.data.tags["verdict"] == best["primary_verdict"]
    assert parent.data.tags["verdict.random-init"] == best["verdict"][0]
    assert parent.data.tags["cv_verdict.random-init"] == best["cv_verdict"][0]
    assert "quoted_holdout_kappa_ci_lo" in parent.data.metrics and "verdict_random-init_diff" in parent.data.metrics
    note = parent.data.tags["mlflow.note.content"]  # the run page's description: the study's report
    assert best["primary_verdict"] in note and "confirmed: top 1 configurations" in note and "quote:" in note


def _leaky_fold_split(folds: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The positive control's leak: the fold's head also trains on the images it is scored on
    (its validation fold and the hold-out, with their labels)."""
    return np.arange(len(folds)), np.flatnonzero(folds == k)


@pytest.mark.slow
def test_a_vicreg_only_leak_makes_the_null_test_fail(tmp_path_factory, monkeypatch, report) -> None:
    """The positive control, for the verdict as well as the bounds: on the null test's permuted
    labels, VICReg's heads, and only VICReg's, also train on the images they are scored on. The
    null test's checks must then fail: VICReg's hold-out and CV kappa above their bounds, and
    the primary verdict "pretraining helped". Called in-process (evaluate and the baselines,
    3 seeds), as the confirm stage scores a seed, without a sweep: the leak is in scoring.
    Measured when written: hold-out kappa +0.89 and CV +0.80 against bounds of about 0.2."""
    import dataclasses

    import vicreg.evaluate.protocol
    from tests.conftest import tiny_config
    from vicreg.data import load_datasets, make_folds
    from vicreg.evaluate import EvalData, evaluate
    from vicreg.evaluate.baselines import baseline_encoder, score_baselines
    from vicreg.verdict import HELPED, holdout_verdicts, primary

    root, tmp = _null_root(tmp_path_factory), tmp_path_factory.mktemp("leak")
    sets = {f"data.{k}": v for k, v in NULL_SETS.items()} | {f"eval.{k}": v for k, v in NULL_EVAL.items()}
    cfg = tiny_config(tmp, **{"data.dataset": "synthetic", "data.root": str(root), "data.image_size": 16,
                              "eval.protocol": "linear", **sets})
    data = load_datasets(cfg.data, cfg.model.in_channels)
    folds = make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed, None,
                       cfg.data.holdout)
    scored = EvalData(data.train.images, data.train.labels, folds)
    vic, base = [], {}
    for seed in (1000, 1001, 1002):
        encoder = baseline_encoder("random-init", cfg, seed)  # labels are permuted: no encoder could help
        with monkeypatch.context() as m:
            m.setattr(vicreg.evaluate.protocol, "fold_split", _leaky_fold_split)
            vic.append(evaluate(encoder, scored, dataclasses.replace(cfg.eval, seed=seed), "cpu", "vicreg", True))
        for r in score_baselines(cfg, scored, "cpu", seed, True):
            base.setdefault(r.label, []).append(r)
    bounds = _null_bounds(vic)
    head = primary(holdout_verdicts(vic, base))
    hold = np.mean([r.holdout["kappa"] for r in vic])
    cv = np.mean([r.summary["kappa_mean"] for r in vic])
    report(f"null test's positive control (VICReg's heads leak): hold-out kappa {hold:+.3f} (bound "
           f"{bounds['holdout']:.3f}), CV {cv:+.3f} (bound {bounds['cv']:.3f}); {head['line']}")
    assert hold > bounds["holdout"] and cv > bounds["cv"], (hold, cv, bounds)
    assert head["outcome"] == HELPED, head


def test_worker_entry_takes_explicit_arguments_and_the_storage_from_the_environment(env, monkeypatch, capsys) -> None:
    """`python -m sweeps.worker` (what run.py starts): every setting an argument, the storage
    URL from VICREG_SWEEP_STORAGE only; a bad study file is one line and exit 2."""
    from sweeps.worker import STORAGE_ENV
    from sweeps.worker import main as worker_main

    study = write_study(env["dir"], env["root"])
    journal = env["dir"] / "elsewhere.journal"
    monkeypatch.setenv(STORAGE_ENV, f"journal:{journal}")
    assert worker_main(["--config", str(study), "--trials", "2", "--out", str(env["dir"] / "w"), "--index", "1",
                        "--tracking-uri", env["uri"], "--dry-run"]) == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="tiny-dryrun", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert {t.user_attrs["worker"] for t in trials} == {1}
    assert not (env["dir"] / "w" / "optuna.journal").exists()
    bad = write_study(env["dir"], env["root"], name="bad", colour=1)
    capsys.readouterr()
    assert worker_main(["--config", str(bad), "--trials", "1", "--out", str(env["dir"] / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'colour'" in err[0], err


def test_a_dry_run_worker_never_imports_torch(env) -> None:
    """A --dry-run worker checks a many-machine set-up: it must start in seconds, so it loads no
    torch (before, sweeps/best.py pulled it in through vicreg.data for one sentence)."""
    study = write_study(env["dir"], env["root"])
    code = ("import sys\nfrom sweeps.worker import main\n"
            f"rc = main(['--config', {str(study)!r}, '--trials', '2', '--out', {str(env['dir'] / 'w')!r}, "
            f"'--no-tracking', '--dry-run'])\n"
            "print(rc, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=env["dir"],
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_experiment_file_loads_and_resolves(path: Path) -> None:
    """Each shipped study file loads and its base resolves to a checked config, with every
    searched key's first choice (or low end) applied; the one plain config loads as a config."""
    from sweeps.study import load_study
    from vicreg.config import load_config

    if path.stem == "pretrain_synthetic":
        assert load_config(path).train.checkpoint_dir == "runs/pretrain-synthetic"
        return
    spec = load_study(path)
    values = {}
    for d in spec.search:
        if d.kind == "by":
            d = d.cases[values[d.by]]
        values[d.key] = d.choices[0] if d.kind == "choice" else d.low
    cfg = spec.config(values, {"model.init": "random"})
    assert spec.name == path.stem
    assert cfg.train.epochs == values.get("train.epochs", spec.max_epochs)
