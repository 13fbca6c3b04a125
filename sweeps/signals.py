"""How a sweep stops: Ctrl-C, a scheduler's SIGTERM, and --max-time's SIGALRM.

Ctrl-C stops the sweep; SIGTERM (what SLURM and cloud schedulers send before a kill) and
--max-time preempt it: the trial in flight stops at once, keeps its last checkpoint, is
marked failed with the reason and is retried (resumed from that checkpoint) on the next
start. The handlers only set flags and raise; the worker loop, the trial and the MLflow
run turn them into states (sweeps/worker.py, sweeps/tracking.py: tracked).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

INTERRUPTED = threading.Event()
# The pending preemption; raised at once inside a trial's training, else at the next check.
PREEMPT: dict[str, Any] = {"reason": None, "in_trial": False}


class Preempted(KeyboardInterrupt):
    """SIGTERM or --max-time: `reason` says which. A KeyboardInterrupt, so that every layer
    that cleans up after Ctrl-C (MLflow run, trial state) cleans up after it too."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C: remember it, then raise as Python's default handler does. The flag is checked
    again at every epoch and between trials, so an interrupt that some library swallows
    (a database driver mid-rollback, say) still stops the sweep at the next boundary."""
    INTERRUPTED.set()
    raise KeyboardInterrupt


def preempt(reason: str) -> None:
    """The SIGTERM / SIGALRM (--max-time) handler's body."""
    PREEMPT["reason"] = reason
    if PREEMPT["in_trial"]:
        raise Preempted(reason)


def check_interrupted() -> None:
    """Raise the pending Ctrl-C or preemption (called at every epoch and between trials)."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt
    if PREEMPT["reason"]:
        raise Preempted(PREEMPT["reason"])


@contextmanager
def preemptible() -> Iterator[None]:
    """A trial's long work: a preemption raises inside it instead of waiting for its end."""
    PREEMPT["in_trial"] = True
    try:
        check_interrupted()
        yield
    finally:
        PREEMPT["in_trial"] = False


@contextmanager
def handlers() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGALRM handled as above for the block (flags cleared first);
    the previous handlers and no pending alarm afterwards."""
    INTERRUPTED.clear()
    PREEMPT["reason"] = None
    previous = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGINT, on_sigint),
        (signal.SIGTERM, lambda signum, frame: preempt("terminated (SIGTERM)")),
        (signal.SIGALRM, lambda signum, frame: preempt("time limit (--max-time)")))}
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_code(e: Preempted) -> int:
    """0 for --max-time (the job ran its time as planned), 143 for SIGTERM (128 + 15)."""
    return 0 if "time limit" in e.reason else 143
