"""Workers on one PostgreSQL-backed study, against a real server on loopback.

The fixture starts a throwaway cluster (initdb + pg_ctl, as the `postgres` user when run as
root) and stops it afterwards. Without PostgreSQL's binaries the tests skip, except in CI,
where they fail: CI installs the package (scripts/ensure_postgres.sh).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from sweeps.run import main
from tests.test_sweeps import RUN_PY, _runs, write_study


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(f"{folder}/{name}"):
            return f"{folder}/{name}"
    return None


class Postgres:
    """A PostgreSQL cluster in a temp folder, listening on 127.0.0.1 only, trust auth for user vicreg."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vicreg-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *cmd: str) -> None:
        out = subprocess.run([*self.as_postgres, *cmd], capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {(out.stderr or out.stdout).strip()[:300]}")

    def start(self) -> None:
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        if not self.data.exists():
            self._run(_bin("initdb"), "-D", str(self.data), "-U", "vicreg", "--auth=trust", "-E", "UTF8")
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def createdb(self, name: str) -> str:
        self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "vicreg", name)
        return f"postgresql://vicreg@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="module")
def postgres():
    missing = [n for n in ("initdb", "pg_ctl", "createdb") if _bin(n) is None]
    server = None
    try:
        if missing:
            raise RuntimeError(f"PostgreSQL binaries not found ({', '.join(missing)}); install package postgresql")
        server = Postgres()
        server.start()
    except (RuntimeError, OSError, KeyError) as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL could not start in CI: {e}")
        pytest.skip(f"PostgreSQL could not start: {e}")
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture()
def env(tmp_path: Path, synthetic_root: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return {"dir": tmp_path, "root": synthetic_root, "uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}


def _quick_study(env, trials: int, epochs: int = 1) -> Path:
    path = write_study(env["dir"], env["root"], budget={"trials": trials}, probe_every=0, log_checkpoint=False)
    text = path.read_text().replace("epochs: 2", f"epochs: {epochs}")
    path.write_text(text)
    return path


def test_three_workers_finish_exactly_the_target(postgres, env) -> None:
    url = postgres.createdb("exact")
    study = _quick_study(env, trials=12)
    assert main(["--config", str(study), "--storage", url, "--workers", "3", "--tracking-uri", env["uri"],
                 "--out", str(env["dir"] / "runs")]) == 0
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert len(trials) == 12 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(t.number for t in trials) == list(range(12))
    assert {t.user_attrs["worker"] for t in trials} == {0, 1, 2}
    _, parents, runs = _runs(env)
    assert len(parents) == 1 and len(runs) == 12
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert parents[0].data.params["storage"] == url  # no password in this URL to mask


def test_a_killed_worker_s_trial_is_retried_by_another(postgres, env) -> None:
    url = postgres.createdb("killed")
    study = _quick_study(env, trials=4, epochs=4)
    proc = subprocess.Popen([sys.executable, RUN_PY, "--config", str(study), "--storage", url, "--workers", "2",
                             "--tracking-uri", env["uri"], "--out", str(env["dir"] / "runs")], cwd=env["dir"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    t0 = time.time()
    while victim is None and time.time() - t0 < 180:
        assert proc.poll() is None, proc.stdout.read()
        try:
            running = optuna.load_study(study_name="tiny", storage=url).get_trials(
                states=(optuna.trial.TrialState.RUNNING,))
            victim = next((t for t in running if "pid" in t.user_attrs and "mlflow_run_id" in t.user_attrs), None)
        except KeyError:  # the study is not created yet
            pass
        time.sleep(0.5)
    assert victim is not None, "no trial started"
    os.kill(victim.user_attrs["pid"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    trials = optuna.load_study(study_name="tiny", storage=url).trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == 4
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert [t.number for t in failed] == [victim.number]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == victim.params
    client, _, runs = _runs(env)
    assert client.get_run(victim.user_attrs["mlflow_run_id"]).info.status == "FAILED"
    assert all(r.info.status != "RUNNING" for r in runs)


def _start_mlflow(folder: Path, backend: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request

    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            assert proc.poll() is None, "mlflow server exited"
            time.sleep(0.5)
    raise AssertionError("mlflow server did not start")


def test_mlflow_server_down_for_a_while_loses_no_epoch(postgres, env) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = postgres.createdb("mlflow")
    server = _start_mlflow(env["dir"], backend, port)
    uri = f"http://127.0.0.1:{port}"
    study = _quick_study(env, trials=1, epochs=6)
    proc = subprocess.Popen([sys.executable, RUN_PY, "--config", str(study), "--tracking-uri", uri,
                             "--out", str(env["dir"] / "runs")], cwd=env["dir"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        t0 = time.time()
        while time.time() - t0 < 180:
            assert proc.poll() is None, proc.stdout.read()
            exp = client.get_experiment_by_name("tiny")
            runs = client.search_runs([exp.experiment_id], "tags.`vicreg.role` = 'trial'") if exp else []
            if runs and "loss" in runs[0].data.metrics:
                break
            time.sleep(0.5)
        down_at = time.time()
        server.terminate()
        server.wait(timeout=30)
        time.sleep(5)  # epochs go on while the server is away; the client retries
        server = _start_mlflow(env["dir"], backend, port)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        run = client.search_runs([exp.experiment_id], "tags.`vicreg.role` = 'trial'")[0]
        assert run.info.status == "FINISHED"
        assert run.info.end_time / 1000 > down_at + 5  # the trial really ran through the outage
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == list(range(1, 7))
    finally:
        server.terminate()
        server.wait(timeout=30)
