"""Every use of Optuna's private API, in one place.

We run the ask/tell loop ourselves (workers claim trials under a lock so that a study stops
at exactly --trials), so a few things that `study.optimize` does inside Optuna are done here:
the heartbeat thread of a running trial, writing the state of a trial this worker does not
hold a `Trial` object for (a dead worker's), and reading a trial back after `tell`. Optuna
has no public API for these. `check()` names any of them that an Optuna release moved;
tests/sweeps/test_optuna_compat.py runs it, and `sweeps/run.py` runs it before any work.
pyproject.toml bounds Optuna to the major version these were checked against.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager

import optuna
from optuna.trial import FrozenTrial, TrialState

TESTED_MAJOR = 5  # optuna 5.x; pyproject.toml: optuna>=5.0,<6

# (module, attribute) pairs used below, and the private storage methods that
# sweeps/storage.py wraps with retries (Optuna's _CachedStorage and Study call them).
PRIVATE = [
    ("optuna.storages._heartbeat", "get_heartbeat_thread"),
    ("optuna.storages._heartbeat", "is_heartbeat_enabled"),
    ("optuna.study.study", "Study._storage"),
    ("optuna.trial._trial", "Trial._trial_id"),
    ("optuna.storages._cached_storage", "_CachedStorage._backend"),
    ("optuna.pruners", "HyperbandPruner._max_resource"),
]
RDB_PRIVATE_METHODS = ("_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id",
                       "_get_stale_trial_ids")


def check() -> list[str]:
    """The private names this project uses that the installed Optuna lacks ([] when all are there)."""
    missing = []
    probe = _probe_study()
    for module, attr in PRIVATE:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            missing.append(f"{module} (module)")
            continue
        owner, _, name = attr.rpartition(".")
        if not owner:
            if not hasattr(mod, name):
                missing.append(f"{module}.{name}")
            continue
        # Instance attributes are set in __init__: look on a live object.
        instance = {"Study": probe, "Trial": probe.ask(), "_CachedStorage": _cached(),
                    "HyperbandPruner": optuna.pruners.HyperbandPruner(max_resource=9)}.get(owner)
        if instance is None or not hasattr(instance, name):
            missing.append(f"{module}.{attr}")
    for name in RDB_PRIVATE_METHODS:
        if not hasattr(optuna.storages.RDBStorage, name):
            missing.append(f"optuna.storages.RDBStorage.{name}")
    return missing


def _probe_study() -> optuna.Study:
    """A throwaway in-memory study."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        return optuna.create_study()
    finally:
        optuna.logging.set_verbosity(verbosity)


def _cached() -> object:
    """Optuna's cache wrapper (what an RDB storage is wrapped in), around an in-memory storage."""
    from optuna.storages._cached_storage import _CachedStorage

    return _CachedStorage(optuna.storages.InMemoryStorage())  # type: ignore[arg-type]


class OptunaMoved(RuntimeError):
    """The installed Optuna lacks a private name this project uses (the message names it)."""


def require() -> None:
    """Raise one line naming what moved, before any work, when the installed Optuna lacks a name."""
    missing = check()
    if missing:
        raise OptunaMoved(f"optuna {optuna.__version__} moved {', '.join(missing)}, which sweeps/optuna_compat.py "
                           f"uses; install optuna {TESTED_MAJOR}.x (pip install 'optuna>={TESTED_MAJOR},"
                           f"<{TESTED_MAJOR + 1}')")


def backend(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage under Optuna's cache wrapper (_CachedStorage), if any."""
    s = study._storage
    return getattr(s, "_backend", s)


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> AbstractContextManager:
    """The thread that writes `trial`'s heartbeat while it runs (RDB storages with heartbeats;
    a no-op otherwise), as study.optimize starts it."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, study._storage)


def heartbeat_enabled(study: optuna.Study) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (what RDBStorage.record_heartbeat takes)."""
    return trial._trial_id


def hyperband_max_resource(pruner: optuna.pruners.HyperbandPruner) -> int | str:
    """The epochs Hyperband's brackets span (sweeps/study.py sets it; tests read it back)."""
    return pruner._max_resource


def stored_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as stored now (after a tell that Optuna refused, say)."""
    return study._storage.get_trial(trial._trial_id)


def set_user_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: object) -> None:
    """A user attribute on a trial this process may hold only as a FrozenTrial."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def fail(study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
    """Mark a RUNNING trial of another (dead) worker FAIL with `reason`."""
    study._storage.set_trial_user_attr(trial._trial_id, "reason", reason)
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def stopped_outside_optimize(e: RuntimeError) -> bool:
    """Is `e` Optuna's complaint that a sampler called study.stop() outside study.optimize (the
    GridSampler once its grid is used up)? Optuna raises a plain RuntimeError for it, so only
    its text tells; the trial's state was stored before it (worker._tell)."""
    return "Study.stop" in str(e)
