"""How a trial or a confirm run ends: one table from what happened to what it means.

Every place that turns an ending into a state reads OUTCOMES, never the message text: the
MLflow run's status and state tag (tracking.tracked), the trial's Optuna state, whether it is
enqueued again and whether it counts towards max_consecutive_failures (worker.run_worker),
the sweep's exit code and parent-run status (run.py), and the confirm stage. What happened is
told by type: an exception class below (or optuna.TrialPruned, KeyboardInterrupt,
signals.Preempted and vicreg.errors.RankLost), or a block that returned. The fault table of
docs/sweeps.md is generated from this table (`markdown_table`), and a test checks each row and that the page holds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import optuna

from vicreg.errors import RankLost, first_line

from .signals import PREEMPT, Preempted

if TYPE_CHECKING:
    from vicreg.config import Config

Retry = Literal["no", "re-enqueued", "alone, once"]


class TrialFailed(RuntimeError):
    """A trial that failed for a reason worth one line."""


class OutOfMemory(TrialFailed):
    """The trial ran out of GPU memory (torch.OutOfMemoryError, typed by `typed`)."""


class Diverged(optuna.TrialPruned):
    """Pretraining's loss became non-finite. A trial that diverges is pruned: Optuna keeps its
    reported values and the sampler learns from them (a failed trial would be retried, and
    diverge again)."""


class SweepStopped(RuntimeError):
    """The sweep stopped on purpose (too many consecutive failures); the message says why."""


@dataclass(frozen=True)
class Outcome:
    event: str  # what happened
    optuna_state: str  # the trial's Optuna state ("-": not an Optuna trial)
    mlflow_status: str  # the MLflow run's status
    state_tag: str  # the run's `state` tag
    retry: Retry  # enqueued again (its retry resumes from the last checkpoint), or not
    counts_as_failure: bool  # towards the study's max_consecutive_failures
    exit_code: int | None  # the sweep command's exit code when this ends the sweep; None: it goes on
    means: str  # what the user reads


OUTCOMES: dict[str, Outcome] = {o.event: o for o in (
    Outcome("completed", "COMPLETE", "FINISHED", "COMPLETE", "no", False, None,
            "scored; counts towards --trials"),
    Outcome("pruned", "PRUNED", "KILLED", "PRUNED", "no", False, None,
            "the pruner stopped it (reason and pruned_epoch on the run); counts towards --trials"),
    Outcome("diverged (trial)", "PRUNED", "KILLED", "PRUNED", "no", False, None,
            "pruned, with the step in its reason, and infeasible (constraint `diverged`): TPE counts it bad; "
            "counts towards --trials"),
    Outcome("diverged (confirm run)", "-", "FAILED", "DIVERGED", "no", False, None,
            "not an Optuna trial, so not pruned: the seed counts as diverged and the configuration ranks "
            "after those whose seeds all finished"),
    Outcome("out of memory, packed (--per-gpu > 1)", "FAIL", "FAILED", "FAILED", "alone, once", False, None,
            "retried once with its GPU to itself (tags alone_on_gpu, oom_retry_of_trial)"),
    Outcome("out of memory", "FAIL", "FAILED", "FAILED", "no", True, None,
            "fails with its one-line reason and traceback.txt"),
    Outcome("another exception", "FAIL", "FAILED", "FAILED", "no", True, None,
            "fails with its one-line reason and traceback.txt; max_consecutive_failures in a row stop "
            "the sweep (exit 1)"),
    Outcome("max_consecutive_failures in a row", "FAIL", "FAILED", "FAILED", "no", True, 1,
            "the sweep stops (SweepStopped); its parent run is FAILED and finished trials are kept"),
    Outcome("Ctrl-C", "FAIL", "KILLED", "INTERRUPTED", "re-enqueued", False, 130,
            "the next start resumes it from its last checkpoint"),
    Outcome("SIGTERM", "FAIL", "KILLED", "PREEMPTED", "re-enqueued", False, 143,
            "stops at once; the next start resumes it from its last checkpoint"),
    Outcome("--max-time", "FAIL", "KILLED", "PREEMPTED", "re-enqueued", False, 0,
            "stops at once (the job ran its time as planned); the next start resumes it"),
    Outcome("a rank of its group died (--gpus-per-trial)", "FAIL", "FAILED", "RANK_LOST", "re-enqueued", False, 1,
            "its worker group ends (its process group is broken); another group or the next start resumes the "
            "trial from its last checkpoint"),
)}


def typed(e: BaseException, reason: str) -> BaseException:
    """An exception as the table's type: torch.OutOfMemoryError -> OutOfMemory(reason); others as they are."""
    if type(e).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError, without importing torch
        return OutOfMemory(reason)
    return e


def failure_reason(e: BaseException, cfg: Config) -> str:
    """The one line a failed trial records as its reason (the configuration's size for out of memory)."""
    if isinstance(typed(e, ""), OutOfMemory):
        return f"CUDA out of memory at data.batch_size={cfg.data.batch_size}, data.image_size={cfg.data.image_size}"
    return first_line(e, limit=4000, with_type=True)


@contextmanager
def failures_recorded(trial: optuna.Trial, cfg: Config) -> Iterator[None]:
    """Why a trial stopped, on the trial (user attr `reason`); out of memory becomes a one-line OutOfMemory."""
    try:
        yield
    except optuna.TrialPruned as e:
        trial.set_user_attr("reason", str(e))
        raise
    except Exception as e:
        reason = failure_reason(e, cfg)
        trial.set_user_attr("reason", reason)
        as_typed = typed(e, reason)  # torch's out-of-memory error -> OutOfMemory
        if as_typed is not e:
            raise as_typed from e
        raise



def outcome_of(e: BaseException | None, packed: bool = False, confirm: bool = False) -> Outcome:
    """The row for how a block ended: `e` the exception it raised (None: it returned);
    `packed`: the trial shared its GPU and was not already its alone retry; `confirm`: a
    confirm run, not an Optuna trial."""
    if e is None:
        return OUTCOMES["completed"]
    if isinstance(e, SweepStopped):
        return OUTCOMES["max_consecutive_failures in a row"]
    if isinstance(e, Diverged):
        return OUTCOMES["diverged (confirm run)" if confirm else "diverged (trial)"]
    if isinstance(e, optuna.TrialPruned):
        return OUTCOMES["pruned"]
    if isinstance(e, Preempted):
        return OUTCOMES["--max-time" if e.time_limit else "SIGTERM"]
    if isinstance(e, RankLost):  # a rank ended by the same SIGTERM is the preemption, not a fault
        return OUTCOMES["SIGTERM" if PREEMPT["reason"] else "a rank of its group died (--gpus-per-trial)"]
    if isinstance(e, KeyboardInterrupt):
        return OUTCOMES["Ctrl-C"]
    if isinstance(e, OutOfMemory):
        return OUTCOMES["out of memory, packed (--per-gpu > 1)" if packed else "out of memory"]
    return OUTCOMES["another exception"]


def markdown_table() -> str:
    """docs/sweeps.md's table of how a trial ends (checked by tests/sweeps/test_outcome.py)."""
    rows = ["| what happened | Optuna state | MLflow status / `state` | enqueued again | sweep exit code | "
            "what it means |", "|---|---|---|---|---|---|"]
    for o in OUTCOMES.values():
        code = "goes on" if o.exit_code is None else str(o.exit_code)
        rows.append(f"| {o.event} | {o.optuna_state} | {o.mlflow_status} / {o.state_tag} | {o.retry} | {code} | "
                    f"{o.means} |")
    return "\n".join(rows)
