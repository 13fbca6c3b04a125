"""--gpus-per-trial: a worker is a group of processes training each trial together (sweeps/group.py),
checked on the CPU with gloo (--set train.device=cpu)."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from sweeps.gpu_share import gpu_list, worker_gpus
from sweeps.group import group_env
from sweeps.run import main
from tests.helpers import beside, env_optuna, env_runs, stop_mid_trial, sweep_args, wait_until, write_study

# Batches of 24 (12 a rank): 2 steps an epoch of the 48 pretraining images, each with its
# gradient all-reduce, the cost of a step on 2 processes.
GROUP = ["--gpus-per-trial", "2", "--set", "train.device=cpu", "--set", "data.batch_size=24"]


def test_gpus_split_into_one_group_per_trial() -> None:
    assert gpu_list("0-3,6") == ["0", "1", "2", "3", "6"]
    assert worker_gpus(gpu_list("0-7"), 1, 4) == ["0,1,2,3", "4,5,6,7"]  # two 4-GPU trials at once
    assert worker_gpus(["0", "1"], 3) == ["0", "0", "0", "1", "1", "1"]
    env = group_env(1, 4, 29500)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_PORT"]) == ("1", "4", "1", "29500")


@pytest.mark.slow  # 2-process trials: make test
def test_two_rank_trials_track_once_survive_a_killed_rank_and_prune_together(env, capfd) -> None:
    """A trial on a 2-process group, with kill -9 of rank 1 mid-trial: rank 0's next collective
    fails, the trial is FAIL with a lost rank (not counted as a failure) and enqueued again, and
    the worker group ends. The next start (a new group) resumes it from its checkpoint in the same
    MLflow run and finishes it: one report per epoch and one logged value per epoch, before the
    kill and after the resume (rank 0's, not one per rank). That start's pruner stops every trial
    at its first report: the next two trials end at epoch 1 on both ranks, and the group goes on
    from one to the next. (Two starts, both in this process: each costs two interpreters with torch.)"""
    study = write_study(env["dir"], env["root"], budget={"trials": 3})  # 2 epochs: killed in the second
    ckpt = env["dir"] / "runs" / "checkpoints"

    def kill_rank_1(stop: threading.Event) -> None:
        wait_until(lambda: bool(list(ckpt.glob("*/last.pt"))), stop, "an epoch's checkpoint", every_s=0.1)
        follower = _rank_pid(os.getpid(), "1")  # the group's ranks are this process's children
        assert stop_mid_trial(follower, lambda: not stop.is_set(), signal.SIGKILL), "the sweep ended before the kill"

    with beside(kill_rank_1):  # the first start in this process, the kill beside it
        code = main(sweep_args(env, study, *GROUP))
    out = capfd.readouterr().out
    assert code == 1, out
    first = env_optuna(env).trials[0]
    assert first.state.name == "FAIL" and "group is gone" in first.user_attrs["reason"], out

    # A pruner that judges a trial at its first report only (Optuna's threshold pruner checks the
    # first report at or past n_warmup_steps, then every interval_steps): a kappa is never 2, so
    # new trials stop at epoch 1, while the resumed trial, whose epoch-1 report came before the
    # kill, is never judged and finishes. Optuna keeps no pruner: each start uses its study file's.
    write_study(env["dir"], env["root"], budget={"trials": 3},
                pruner={"name": "threshold", "lower": 2.0, "n_warmup_steps": 1, "interval_steps": 10})
    assert main(sweep_args(env, study, *GROUP)) == 0
    trials = env_optuna(env).trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "PRUNED", "PRUNED"]
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].user_attrs["resumed_at_epoch"] == 2
    assert sorted(trials[1].intermediate_values) == [1, 2]
    assert [t.user_attrs["pruned_epoch"] for t in trials[2:]] == [1, 1]
    client, parents, runs = env_runs(env)
    assert len(parents) == 1 and len(runs) == 3  # the killed trial's run, continued; two pruned ones
    by_trial = {r.data.tags["vicreg.trial"]: r for r in runs}
    assert by_trial["1"].info.status == "FINISHED" and by_trial["1"].data.tags["resumed_from_trial"] == "0"
    assert all(by_trial[n].info.status == "KILLED" for n in ("2", "3"))
    steps = {n: sorted(m.step for m in client.get_metric_history(r.info.run_id, "loss")) for n, r in by_trial.items()}
    assert steps == {"1": [1, 2], "2": [1], "3": [1]}


def _rank_pid(sweep_pid: int, rank: str) -> int:
    """The pid of the worker process with RANK=`rank` among the sweep's children."""
    from pathlib import Path

    for child in Path(f"/proc/{sweep_pid}/task").glob("*/children"):
        for pid in child.read_text().split():
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return int(pid)
    raise AssertionError(f"no rank {rank} among the sweep's workers")
