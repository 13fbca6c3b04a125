"""Helpers several test files share: a tiny study file, reading its runs back from MLflow
and Optuna, stopping a process mid-trial, and an MLflow server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import optuna
import yaml
from mlflow.tracking import MlflowClient

REPO = Path(__file__).resolve().parents[1]  # the repository root
RUN_PY = str(REPO / "sweeps" / "run.py")


def write_study(folder: Path, root: Path, name: str = "tiny", **over) -> Path:
    """A study file of 2-epoch trials at 16 px on the synthetic set at `root`; `over` replaces top-level keys."""
    doc = {
        "name": name,
        "base": {
            "data": {"dataset": "synthetic", "root": str(root), "cache_dir": str(folder / "cache"),
                     "image_size": 16, "batch_size": 16, "folds": 3},
            # The ImageNet stem: a third of the CIFAR stem's step at 16 px (see tiny_config).
            "model": {"expander_hidden": 32, "expander_out": 32, "expander_layers": 2, "small_stem": False},
            "optim": {"name": "adam", "warmup_epochs": 0.0},
            "train": {"epochs": 2},
            "eval": {"protocol": "linear", "epochs": 2, "baselines": False},
        },
        "search": {"optim.lr": {"float": [1e-4, 1e-2], "log": True},
                   "optim.weight_decay": {"float": [1e-6, 1e-3], "log": True}},
        "objective": {"metric": "kappa_mean", "direction": "maximize"},
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "none"},
        "budget": {"trials": 3},
        "probe_every": 1,
        "confirm": {"top_k": 0, "seeds": 0},  # the confirm stage has its own tests
        "log_checkpoint": False,  # a 45 MB encoder file per trial; one test asks for it
        "log_plots": False,  # about 1 s of matplotlib per trial; the tests that look at plots ask
    }
    for key, value in over.items():
        doc[key] = value
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def study_runs(uri: str, name: str = "tiny"):
    """(client, parent runs, trial runs) of the study's MLflow experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    found = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in found if r.data.tags.get("vicreg.role") == "parent"]
    trials = [r for r in found if r.data.tags.get("vicreg.role") == "trial"]
    return client, parents, trials


def journal_study(out_dir: Path, name: str = "tiny") -> optuna.Study:
    """The Optuna study in the embedded journal of a sweep's --out folder."""
    backend = optuna.storages.journal.JournalFileBackend(str(out_dir / "optuna.journal"))
    storage = optuna.storages.JournalStorage(backend)
    return optuna.load_study(study_name=name, storage=storage)


def stop_mid_trial(pid: int, still_running: Callable[[], bool], sig: int = signal.SIGKILL) -> bool:
    """Freeze `pid` (SIGSTOP), and send `sig` only if its trial is still running then (a fast
    machine may have finished it between our look and the signal); True when sent. A frozen
    process cannot finish anything, so the check cannot go stale before the signal lands."""
    os.kill(pid, signal.SIGSTOP)
    sent = False
    try:
        if still_running():
            os.kill(pid, sig)
            sent = True
        return sent
    finally:
        if not (sent and sig == signal.SIGKILL):
            os.kill(pid, signal.SIGCONT)  # it goes on (a sent SIGTERM's handler runs as it resumes)


def start_mlflow_server(folder: Path, backend: str, port: int) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port` over `backend`, started and answering /health.

    MLflow 3's job-execution workers (GenAI trace jobs, which this project never submits)
    are off: they cost seconds of CPU at every start."""
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            assert proc.poll() is None, "mlflow server exited"
            time.sleep(0.5)
    proc.terminate()
    raise AssertionError("mlflow server did not start")


class Outage:
    """A TCP relay on 127.0.0.1:`port` to a server on 127.0.0.1:`target` that can go away and come
    back, as a server's graceful restart looks to its clients: `down()` stops listening (new
    connections are refused), stops relaying requests, lets replies already under way through
    for `drain_s`, then closes every connection; `up()` listens again. One server start where a
    stop and a restart cost two (about 5 s of CPU each for MLflow's)."""

    def __init__(self, port: int, target: int, drain_s: float = 0.5) -> None:
        self.port, self.target, self.drain_s = port, target, drain_s
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._relaying = threading.Event()
        self.up()

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._relaying.set()
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        self._relaying.clear()
        self._listener.close()
        time.sleep(self.drain_s)
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by down()
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            except OSError:  # the server itself is not there: so it looks to the client
                client.close()
                continue
            with self._lock:
                self._open |= {client, server}
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, request: bool) -> None:
        try:
            while (data := src.recv(65536)) and (self._relaying.is_set() or not request):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)  # the other side sees this side's end
        except OSError:  # closed by down() or by the other end
            pass


@contextmanager
def beside(fn: Callable[[threading.Event], None]) -> Iterator[None]:
    """Run fn(stop) in a thread while the block runs: the block calls a sweep's main() in this
    process (it needs the main thread, for its signal handlers, and its imports are paid), the
    thread does to it what a test needs done (kill a worker, cut a server) and should give up when
    `stop` is set (main returned). What fn raised is raised after the block."""
    stop, raised = threading.Event(), []

    def target() -> None:
        try:
            fn(stop)
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread below
            raised.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
    if raised:
        raise raised[0]


def wait_until(predicate: Callable[[], bool], stop: threading.Event, what: str, limit_s: float = 180,
               every_s: float = 0.3) -> None:
    """Poll `predicate` until it holds; AssertionError when `stop` is set first or after `limit_s`."""
    t0 = time.time()
    while not predicate():
        assert not stop.is_set(), f"the sweep ended before {what}"
        assert time.time() - t0 < limit_s, f"timed out waiting for {what}"
        time.sleep(every_s)


def free_port() -> int:
    """A TCP port nobody listens on now (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep_args(env: dict, study: Path, *extra: str) -> list[str]:
    """A sweep's command line for the `env` fixture: its study, tracking store and runs folder."""
    return ["--config", str(study), "--tracking-uri", env["uri"], "--out", str(env["dir"] / "runs"), *extra]


def env_runs(env: dict, name: str = "tiny"):
    """(client, parent runs, trial runs) of the `env` fixture's tracking store."""
    return study_runs(env["uri"], name)


def env_optuna(env: dict, name: str = "tiny"):
    """The Optuna study a sweep under the `env` fixture journaled in its runs folder."""
    return journal_study(env["dir"] / "runs", name)


def call_main(main: Callable[[list[str]], int], capture, *args: str) -> SimpleNamespace:
    """A command's `main(ARGS)` in this process (no interpreter and torch start-up per call):
    returncode, stdout and stderr, as subprocess.run would give them. `capture`: pytest's capsys,
    or capfd when the command starts processes whose output counts too (sweep workers)."""
    capture.readouterr()  # what came before is not this command's
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's usage errors
        code = e.code if isinstance(e.code, int) else 1
    out = capture.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def vicreg_cli(capsys, *args: str) -> SimpleNamespace:
    """`vicreg ARGS` in this process. Warnings go to pytest, not stderr."""
    from vicreg.__main__ import main

    return call_main(main, capsys, *args)
