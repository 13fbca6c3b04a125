"""Several trials per GPU, on the CPU: which GPU and memory share each worker gets, an
out-of-memory trial retried alone (torch.OutOfMemoryError raised by a test hook), the slot
lock's order, --mps without the binary, and run.py's argument checks."""

from __future__ import annotations

import fcntl
import threading
import time
from types import SimpleNamespace

import optuna
import pytest
import torch

from sweeps import gpu_share
from sweeps.cli import load_spec
from sweeps.launch import spawn_workers
from sweeps.run import main, parse_args
from tests.helpers import REPO, journal_study, study_runs, write_study


def test_two_gpus_three_workers_each(env, monkeypatch) -> None:
    study = write_study(env["dir"], env["root"])
    args = parse_args(["--config", str(study), "--gpus", "0,1", "--per-gpu", "3", "--no-tracking"])
    started = []
    monkeypatch.setattr("sweeps.launch.subprocess.Popen", lambda cmd, env: started.append((cmd, env)))
    gpus = gpu_share.worker_gpus(["0", "1"], args.per_gpu)
    spawn_workers(args, load_spec(study, False), 5, env["dir"] / "runs", len(gpus), gpus)
    assert [e["CUDA_VISIBLE_DEVICES"] for _, e in started] == ["0", "0", "0", "1", "1", "1"]
    for i, (cmd, _) in enumerate(started):
        assert cmd[cmd.index("--per-gpu") + 1] == "3" and cmd[cmd.index("--index") + 1] == str(i)
    # Each worker's cap: (1 - 0.05) / 3 of its GPU, set through torch (no GPU needed to see the call).
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: calls.append((f, d)))
    gpu_share.set_memory_share(3)
    gpu_share.set_memory_share(3, alone=True)
    gpu_share.set_memory_share(1)  # alone on a GPU: no cap at all
    assert calls == [(pytest.approx(0.95 / 3), 0), (1.0, 0)]


def test_an_out_of_memory_trial_packed_is_retried_alone(env, monkeypatch, capsys) -> None:
    """Trial 0 runs out of memory (raised by a test hook) in a worker packed 2 per GPU: it is
    FAILED with its one-line reason, and retried once as an alone trial that completes, both
    recorded as user attributes and as MLflow tags."""
    import vicreg.train
    from sweeps.worker import STORAGE_ENV
    from sweeps.worker import main as worker_main

    real, calls = vicreg.train.pretrain, []

    def pretrain(cfg, images, callbacks=(), workers_per_device=1):
        calls.append(cfg.data.batch_size)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(cfg, images, callbacks)

    monkeypatch.setattr(vicreg.train, "pretrain", pretrain)
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    study = write_study(env["dir"], env["root"])
    assert worker_main(["--config", str(study), "--trials", "1", "--out", str(env["dir"] / "runs"),
                        "--per-gpu", "2", "--tracking-uri", env["uri"]]) == 0
    out = capsys.readouterr().out
    assert "trial 0: out of memory beside 1 other trial(s) on its GPU; retried once, alone on its GPU" in out
    first, retry = journal_study(env["dir"] / "runs", "tiny").trials
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["retried_alone"] is True
    assert first.user_attrs["reason"].startswith("CUDA out of memory at data.batch_size=16, data.image_size=16")
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == first.params
    assert retry.user_attrs["alone"] is True and retry.user_attrs["retry_of"] == 0
    _, _, runs = study_runs(env["uri"])
    tags = [r.data.tags for r in runs if r.data.tags.get("alone_on_gpu") == "true"]
    assert len(tags) == 1 and tags[0]["oom_retry_of_trial"] == "0" and tags[0]["workers_per_gpu"] == "2"


def test_an_alone_trial_waits_for_the_packed_ones_and_keeps_new_ones_out(tmp_path) -> None:
    """Packed trial A holds the GPU; alone trial B asks next and waits for A; packed trial C asks
    while B waits, and starts only after B: the gate keeps B from being starved. Ordered by
    events and polls (with deadlines), not by sleeps."""
    events: list[str] = []
    a_started, a_may_end = threading.Event(), threading.Event()

    def trial(name: str, alone: bool) -> None:
        with gpu_share.gpu_slot(tmp_path, 2, alone):
            events.append(f"{name} start")
            if name == "A":
                a_started.set()
                assert a_may_end.wait(10)
            events.append(f"{name} end")

    def gate_held() -> bool:  # B holds the turnstile while it waits for A's place
        with open(next(tmp_path.glob("*.gate"))) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False

    threads = [threading.Thread(target=trial, args=(n, n == "B")) for n in "ABC"]
    threads[0].start()
    assert a_started.wait(10)
    threads[1].start()
    deadline = time.monotonic() + 10
    while not gate_held():
        assert time.monotonic() < deadline, "B never took the gate"
        time.sleep(0.01)
    threads[2].start()  # C now queues behind B at the gate, whenever it gets there
    a_may_end.set()
    for t in threads:
        t.join(timeout=10)
    assert events == ["A start", "A end", "B start", "B end", "C start", "C end"], events


def test_each_gpu_has_its_own_lock_on_a_host_with_dots_in_its_name(tmp_path, monkeypatch) -> None:
    """An alone trial on GPU 0 of node1.cluster keeps GPU 1's packed trials waiting for nothing."""
    monkeypatch.setattr(gpu_share.socket, "gethostname", lambda: "node1.cluster")
    entered = threading.Event()

    def packed_on_gpu1() -> None:
        with gpu_share.gpu_slot(tmp_path, 2, alone=False):
            entered.set()

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with gpu_share.gpu_slot(tmp_path, 2, alone=True):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
        t = threading.Thread(target=packed_on_gpu1)
        t.start()
        assert entered.wait(timeout=5), "GPU 1's trial waited for GPU 0's alone trial"
        t.join()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpu-node1.cluster-0.gate", "gpu-node1.cluster-0.lock", "gpu-node1.cluster-1.gate", "gpu-node1.cluster-1.lock"]


def test_mps_without_its_binary_is_one_line(env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(env["dir"]))  # no nvidia-cuda-mps-control here
    assert gpu_share.start_mps(["0"], env["dir"] / "mps") is None
    assert capsys.readouterr().out.strip() == "--mps: nvidia-cuda-mps-control is not on the PATH; running without MPS"


@pytest.mark.parametrize("extra, message", [
    (["--max-time", "-5"], "--max-time must be a number of seconds > 0"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--gpus", "x,y"], "--gpus takes comma-separated GPU numbers or ranges, e.g. 0,1 or 0-7"),
    (["--gpus", "3-1"], "--gpus takes comma-separated GPU numbers or ranges, e.g. 0,1 or 0-7"),
    (["--confirm", "--seeds", "0"], "--seeds must be 1..499"),
    (["--per-gpu", "2"], "--per-gpu needs --gpus"),
    (["--gpus", "0", "--per-gpu", "0"], "--per-gpu must be >= 1"),
    (["--mps"], "--mps needs --gpus"),
])
def test_bad_arguments_are_one_line_before_any_work(env, capsys, extra: list[str], message: str) -> None:
    study = write_study(env["dir"], env["root"])
    assert main(["--config", str(study), "--no-tracking", "--out", str(env["dir"] / "runs"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}"), err
    assert not (env["dir"] / "runs").exists()  # nothing started


def test_packing_benchmark_study_and_table(tmp_path) -> None:
    """The benchmark's study loads as a study (the demo's search at a fixed size, no pruning,
    no confirm stage), and its table reads trials/h against one worker's at each size."""
    import importlib.util

    from sweeps.cli import load_spec

    path = REPO / "benchmarks" / "gpu_packing.py"
    spec_ = importlib.util.spec_from_file_location("gpu_packing", path)
    bench = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(bench)
    spec = load_spec(bench.study_file(tmp_path, 224), False)
    assert spec.pruner.name == "none" and spec.confirm.seeds == 0
    assert spec.config({}, {}).data.image_size == 224 and "data.image_size" not in {d.key for d in spec.search}
    trial = SimpleNamespace(user_attrs={"config": {"data.batch_size": 32, "train.epochs": 3},
                                        "scores": {"pretrain_epochs": 2}})  # stopped early: 2 epochs
    rows = [bench.summarise(224, n, 100.0, [trial] * done, [], 100, [50.0, 90.0], [10.0, 12.0])
            for n, done in ((1, 2), (4, 7))]
    text = bench.table(rows)  # 4 workers: 7 trials x 2 epochs x 96 images (3 whole batches) in 100 s
    assert "| 224 | 4 | 7 | 252 | 3.50 | 13 | 70 | 11.0/12.0 | 0 |" in text, text
