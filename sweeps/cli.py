"""What both command lines (sweeps/run.py, a worker) share: the study file and the config
overrides from their arguments, and the --max-time alarm."""

from __future__ import annotations

import dataclasses
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from vicreg.config import ConfigError, parse_overrides

from .study import StudySpec, load_study


def overrides_from(sets: list[str], data_root: str | None, test_root: str | None) -> dict[str, Any]:
    """--set KEY=VALUE items, --data-root and --test-root as config overrides."""
    out = dict(parse_overrides(sets))
    if data_root:
        out["data.root"] = data_root
    if test_root:
        out["data.test_root"] = test_root
    return out


def load_spec(path: str | Path, dry_run: bool) -> StudySpec:
    """The study file; a dry run is its own study (Optuna study, MLflow experiment, runs/
    folder, best file)."""
    spec = load_study(path)
    return dataclasses.replace(spec, name=f"{spec.name}-dryrun") if dry_run else spec


def start_deadline(max_time: float | None) -> float | None:
    """--max-time SECONDS: a SIGALRM after that long (handled as a preemption: the running
    trial is stopped and kept resumable), and the wall-clock end it sets; None without it."""
    if not max_time:
        return None
    signal.setitimer(signal.ITIMER_REAL, max_time)  # SIGALRM -> preempt("time limit") (sweeps/signals.py)
    return time.time() + max_time


def writable(folder: Path, what: str) -> None:
    """The folder, or the nearest folder above it that exists, takes a file: else one line now,
    not a traceback after the first trial. Nothing is created but a temporary file, removed at
    once (a shared --out may be filling on another machine)."""
    existing = next(p for p in [folder, *folder.parents] if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder")
        with tempfile.NamedTemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(f"{what} {folder}: cannot write there ({e.strerror or type(e).__name__})") from None
