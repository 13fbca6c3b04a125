"""Workers on one PostgreSQL-backed study, against a real server on loopback (the
`postgres` fixture of conftest.py: a throwaway cluster, see devtools/postgres.py)."""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from sweeps import optuna_compat
from sweeps.run import main
from sweeps.text import describe_url
from tests.helpers import (
    RUN_PY,
    Outage,
    beside,
    free_port,
    start_mlflow_server,
    stop_mid_trial,
    study_runs,
    wait_until,
    write_study,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _quick_study(env, trials: int, epochs: int = 1) -> Path:
    path = write_study(env["dir"], env["root"], budget={"trials": trials}, probe_every=0, log_checkpoint=False)
    text = path.read_text().replace("epochs: 2", f"epochs: {epochs}")
    path.write_text(text)
    return path


def test_three_workers_finish_exactly_the_target(postgres, env) -> None:
    """The claim lock, not training, is under test: --dry-run trials (the same claim, tracking and
    outcome path, with the pretraining replaced by a made curve) finish at exactly the target."""
    url = postgres.createdb("exact")
    study = _quick_study(env, trials=24)
    assert main(["--config", str(study), "--storage", url, "--workers", "3", "--tracking-uri", env["uri"],
                 "--out", str(env["dir"] / "runs"), "--dry-run"]) == 0
    trials = optuna.load_study(study_name="tiny-dryrun", storage=url).trials
    assert len(trials) == 24 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(t.number for t in trials) == list(range(24))
    # Trials of milliseconds: the last worker to start may find none left, but claims did race.
    workers = {t.user_attrs["worker"] for t in trials}
    assert workers <= {0, 1, 2} and len(workers) >= 2, workers
    _, parents, runs = study_runs(env["uri"], "tiny-dryrun")
    assert len(parents) == 1 and len(runs) == 24
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    # The param holds the dialect, host and database: no user name, no password (sweeps/text.py).
    assert parents[0].data.params["storage"] == describe_url(url) == f"postgresql://{url.split('@', 1)[1]}"


def _state(url: str, trial: optuna.trial.FrozenTrial) -> str:
    return optuna.load_study(study_name="tiny", storage=_storage(url)).trials[trial.number].state.name


def test_mlflow_server_down_for_a_while_loses_no_epoch(postgres, env, capfd) -> None:
    """The tracking server goes away for 3 s while a trial trains (its connections cut, new ones
    refused: helpers.Outage), then comes back: the client retries, every epoch is logged once,
    and the trial's run ends FINISHED after the outage. The sweep runs in this process, the
    outage beside it."""
    from mlflow.tracking import MlflowClient

    backend = postgres.createdb("mlflow")
    port = free_port()
    server = start_mlflow_server(env["dir"], backend, port)
    relay = Outage(free_port(), port)
    study = _quick_study(env, trials=1, epochs=4)
    client = MlflowClient(f"http://127.0.0.1:{port}")  # the test's own reads go around the outage
    down_at = []

    def trial_runs() -> list:
        exp = client.get_experiment_by_name("tiny")
        return client.search_runs([exp.experiment_id], "tags.`vicreg.role` = 'trial'") if exp else []

    def outage(stop: threading.Event) -> None:
        wait_until(lambda: any("loss" in r.data.metrics for r in trial_runs()), stop, "a logged epoch", every_s=0.5)
        down_at.append(time.time())
        relay.down()
        time.sleep(3)  # epochs go on while the server is away; the client retries
        relay.up()

    try:
        with beside(outage):
            code = main(["--config", str(study), "--tracking-uri", f"http://127.0.0.1:{relay.port}",
                         "--out", str(env["dir"] / "runs")])
        out = capfd.readouterr()
        assert code == 0, out.out + out.err
        (run,) = trial_runs()
        assert run.info.status == "FINISHED"
        assert run.info.end_time / 1000 > down_at[0] + 3  # the trial really ran through the outage
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(1, 5))
    finally:
        relay.down()
        server.terminate()
        server.wait(timeout=30)


@functools.cache
def _storage(url: str) -> optuna.storages.RDBStorage:
    """One storage (one connection pool) per database for the polling loops: a new one per
    poll leaves its pooled connection open, and a slow machine polls long enough to reach
    the server's max_connections."""
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def _done(url: str) -> int:
    try:
        trials = optuna.load_study(study_name="tiny", storage=_storage(url)).trials
    except KeyError:  # not created yet
        return 0
    return sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials)


def test_a_killed_worker_and_a_database_restart_lose_no_trial(postgres, env, capfd) -> None:
    """Two workers on one PostgreSQL study of 4 trials. One is killed (kill -9) mid-trial: the
    other finds its trial dead, fails it (its MLflow run FAILED) and runs its parameters again.
    Then the database goes away for a few seconds while the survivor is mid-trial (reporting
    probe values every epoch): it waits, reconnects, and the study ends at exactly its target,
    no trial counted twice, none left RUNNING. (One sweep for both, its launcher in this process
    and the kill and the outage beside it: each start of a worker costs an interpreter with torch.)"""
    url = postgres.createdb("restart")
    study = write_study(env["dir"], env["root"], budget={"trials": 4}, probe_every=1, log_checkpoint=False)
    study.write_text(study.read_text().replace("  train:\n    epochs: 2", "  train:\n    epochs: 1"))
    victim = []

    def killed_one() -> bool:
        try:
            running = optuna.load_study(study_name="tiny", storage=_storage(url)).get_trials(
                states=(optuna.trial.TrialState.RUNNING,))
        except KeyError:  # the study is not created yet
            return False
        found = next((t for t in running if "pid" in t.user_attrs and "mlflow_run_id" in t.user_attrs), None)
        # Frozen first: killed only if its trial is still running (a fast machine may finish it).
        if found is not None and stop_mid_trial(found.user_attrs["pid"], lambda: _state(url, found) == "RUNNING"):
            victim.append(found)
        return bool(victim)

    def chaos(stop: threading.Event) -> None:
        wait_until(killed_one, stop, "a trial to kill")
        done_before = _done(url)
        wait_until(lambda: _done(url) > done_before, stop, "a finished trial")  # then the survivor is mid-trial
        postgres.stop()  # fast shutdown: every open session is cut
        time.sleep(4)
        postgres.start()

    _storage(url)  # Optuna's tables, made before the sweep's: two makers at once can collide in PostgreSQL
    with beside(chaos):
        code = main(["--config", str(study), "--storage", url, "--workers", "2", "--tracking-uri", env["uri"],
                     "--out", str(env["dir"] / "runs")])
    out = capfd.readouterr()
    out = out.out + out.err
    assert code == 0, out
    assert "storage: unreachable" in out and "reachable again" in out, out  # the outage was really met
    (victim,) = victim
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 4 and len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert [t.number for t in trials if t.state.name == "FAIL"] == [victim.number]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].state.name in ("COMPLETE", "PRUNED") and retry[0].params == victim.params
    client, parents, runs = study_runs(env["uri"])
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    assert len(parents) == 1 and all(r.info.status != "RUNNING" for r in parents + runs)
    assert sum(r.info.status == "FINISHED" for r in runs) == sum(t.state.name == "COMPLETE" for t in done)


def test_another_machine_s_dead_trial_is_found_by_its_heartbeat(postgres, env, monkeypatch) -> None:
    """A trial left RUNNING by a worker on another host (no pid we can check) whose heartbeat
    stopped: it is failed, its MLflow run closed as FAILED, and its parameters run again."""
    import sweeps.storage

    monkeypatch.setattr(sweeps.storage, "HEARTBEAT_S", 1)
    monkeypatch.setattr(sweeps.storage, "GRACE_S", 2)
    url = postgres.createdb("heartbeat")
    study_file = _quick_study(env, trials=2)
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="tiny", storage=storage, direction="maximize")
    victim = study.ask()
    lr = victim.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    victim.suggest_float("optim.weight_decay", 1e-6, 1e-3, log=True)
    from sweeps.tracking import Tracking

    tracking = Tracking.open(env["uri"], "tiny")
    run = tracking.client.create_run(tracking.experiment_id, tags={"vicreg.study": "tiny", "vicreg.trial": "0",
                                                                   "vicreg.role": "trial"})
    for key, value in {"host": "gpu-box-2", "pid": 4242, "mlflow_run_id": run.info.run_id}.items():
        victim.set_user_attr(key, value)
    storage.record_heartbeat(optuna_compat.trial_id(victim))
    # Poll (with a deadline) until the database itself says the heartbeat is past the grace period
    # and the server has been up for the heartbeat interval + grace (before that, sweeps.storage
    # does not read missing heartbeats as dead workers).
    import sqlalchemy

    def stale() -> bool:
        with storage.engine.connect() as conn:
            age, up = conn.execute(sqlalchemy.text(
                "SELECT extract(epoch FROM now() - max(heartbeat)),"
                " extract(epoch FROM now() - pg_postmaster_start_time()) FROM trial_heartbeats")).one()
        return float(age) > 2 and float(up) >= 3

    deadline = time.monotonic() + 30
    while not stale():
        assert time.monotonic() < deadline, "the heartbeat never went stale"
        time.sleep(0.2)
    assert main(["--config", str(study_file), "--storage", url, "--tracking-uri", env["uri"],
                 "--out", str(env["dir"] / "runs")]) == 0
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert [t.state.name for t in trials].count("COMPLETE") == 2
    assert trials[0].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].params["optim.lr"] == lr and retry[0].state.name == "COMPLETE"
    assert retry[0].user_attrs["host"] == socket.gethostname()
    assert tracking.client.get_run(run.info.run_id).info.status == "FAILED"


def test_two_machines_stop_at_exactly_the_target(postgres, env) -> None:
    """Two launches with their own output folders (as on two machines: no shared file lock)
    against one PostgreSQL study: the advisory claim lock makes them stop at exactly 40,
    and they share one MLflow parent run. One worker each (each launch runs its trials in its
    own process): the race is between the launches, which share nothing but the database."""
    url = postgres.createdb("machines")
    study = write_study(env["dir"], env["root"], budget={"trials": 40}, probe_every=1)
    procs = [subprocess.Popen([sys.executable, RUN_PY, "--config", str(study), "--storage", url, "--dry-run",
                               "--tracking-uri", env["uri"], "--out", str(env["dir"] / f"m{i}")],
                              cwd=env["dir"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = optuna.load_study(study_name="tiny-dryrun", storage=url).trials
    assert sorted(t.number for t in trials) == list(range(40))
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert {Path(t.user_attrs["config"]["data.root"]).exists() for t in trials} == {True}
    _, parents, runs = study_runs(env["uri"], "tiny-dryrun")
    assert len(parents) == 1 and len(runs) == 40
