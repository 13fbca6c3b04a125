"""How a sweep stops: Ctrl-C, a scheduler's SIGTERM, and --max-time's SIGALRM.

Ctrl-C stops the sweep; SIGTERM (what SLURM and cloud schedulers send before a kill) and
--max-time preempt it: the trial in flight stops at once, keeps its last checkpoint, is
marked failed with the reason and is retried (resumed from that checkpoint) on the next
start. The handlers only set flags and raise; the worker loop, the trial and the MLflow
run turn them into states, as sweeps/outcome.py's table says.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

INTERRUPTED = threading.Event()
# The pending preemption; raised at once inside a trial's training, else at the next check.
PREEMPT: dict[str, Any] = {"reason": None, "time_limit": False, "in_trial": False}


class Preempted(KeyboardInterrupt):
    """SIGTERM or --max-time (`time_limit`), with the `reason` a user reads. A
    KeyboardInterrupt, so that every layer that cleans up after Ctrl-C (MLflow run, trial
    state) cleans up after it too; sweeps/outcome.py says what each means."""

    def __init__(self, reason: str, time_limit: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.time_limit = reason, time_limit


def on_sigint(signum: int, frame: Any) -> None:
    """Ctrl-C: remember it, then raise as Python's default handler does. The flag is checked
    again at every epoch and between trials, so an interrupt that some library swallows
    (a database driver mid-rollback, say) still stops the sweep at the next boundary."""
    INTERRUPTED.set()
    raise KeyboardInterrupt


def preempt(reason: str, time_limit: bool = False) -> None:
    """The SIGTERM / SIGALRM (--max-time) handler's body."""
    PREEMPT["reason"], PREEMPT["time_limit"] = reason, time_limit
    if PREEMPT["in_trial"]:
        raise Preempted(reason, time_limit)


def check_interrupted() -> None:
    """Raise the pending Ctrl-C or preemption (called at every epoch and between trials)."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt
    if PREEMPT["reason"]:
        raise Preempted(PREEMPT["reason"], PREEMPT["time_limit"])


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
    PREEMPT["reason"], PREEMPT["time_limit"] = None, False
    previous = {sig: signal.signal(sig, handler) for sig, handler in (
        (signal.SIGINT, on_sigint),
        (signal.SIGTERM, lambda signum, frame: preempt("terminated (SIGTERM)")),
        (signal.SIGALRM, lambda signum, frame: preempt("time limit (--max-time)", time_limit=True)))}
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
