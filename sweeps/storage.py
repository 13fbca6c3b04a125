"""Where the Optuna study lives, and the lock under which workers claim trials.

- Default: an embedded journal file (Optuna's `JournalFileBackend`): no server, and safe for
  several processes on one machine, unlike SQLite ("database is locked").
- A database URL (postgresql://...): Optuna's RDB storage with heartbeats, so the trials of
  a worker that dies on another machine are failed and retried. Calls that fail because the
  database is unreachable (a restart, a network blip) are retried for up to `wait_s` seconds
  instead of killing the worker.
- The claim lock serialises "count finished trials, then ask for a new one", so that any
  number of workers stop at exactly `--trials`: a file lock beside the journal, or, on
  PostgreSQL, an advisory lock held in the database itself, which covers workers on every
  machine.
"""

from __future__ import annotations

import functools
import hashlib
import socket
import sys
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
import sqlalchemy
import sqlalchemy.exc as sa_exc
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from vicreg.errors import first_line
from vicreg.io import file_lock

from . import optuna_compat
from .optuna_compat import backend
from .text import mask_url

if TYPE_CHECKING:
    from .study import StudySpec

HEARTBEAT_S = 10  # a running trial writes a heartbeat this often ...
GRACE_S = 30  # ... and is stale once it has not for this long
T = TypeVar("T")


class StorageUnavailable(RuntimeError):
    """The database stayed unreachable for longer than the wait allowed; `at_start`: it could not
    be opened at all (a user error, exit 2) rather than lost mid-sweep (exit 1)."""

    def __init__(self, message: str, at_start: bool = False) -> None:
        super().__init__(message)
        self.at_start = at_start


def transient(e: BaseException) -> bool:
    """Did this fail because the database could not be reached (so a retry may succeed)?

    The connection error can sit below others in the exception's chain: Optuna wraps the
    SQLAlchemy errors raised in a session in StorageInternalError, and when a server restart
    cuts a query that Optuna then retries another way in the same session (its _get_trials
    fallback), SQLAlchemy raises PendingRollbackError with the OperationalError as its context.
    Optuna rolls back and closes that session, so a retry starts clean. An error whose chain
    holds no connection error (invalid data, an integrity error) is not retried."""
    seen: set[int] = set()
    link: BaseException | None = e
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, (sa_exc.OperationalError, sa_exc.InterfaceError)) or getattr(
                link, "connection_invalidated", False):
            return True
        link = link.__cause__ or link.__context__
    return False


_local = threading.local()  # per thread: already inside a retried call? (no nested retry loops)


def with_retry(fn: Callable[[], T], wait_s: float, what: str, on_recovered: Callable[[], None] | None = None) -> T:
    """fn(), retried with back-off while the database is unreachable, for up to wait_s seconds."""
    if getattr(_local, "active", False):
        return fn()
    _local.active = True
    try:
        deadline, delay = None, 0.25
        while True:
            try:
                out = fn()
                if deadline is not None:
                    print(f"storage: reachable again after an outage ({what})", file=sys.stderr, flush=True)
                    if on_recovered is not None:
                        on_recovered()
                return out
            except Exception as e:
                if not transient(e):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + wait_s
                    print(f"storage: unreachable ({first_line(e, cause=True)}); retrying for up to {wait_s:.0f} s",
                          file=sys.stderr, flush=True)
                if now >= deadline:
                    raise StorageUnavailable(f"the Optuna storage was unreachable for {wait_s:.0f} s "
                                             f"(during {what}); giving up") from e
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
    finally:
        _local.active = False


# Everything Optuna's study, trial and _CachedStorage call on an RDBStorage (the private
# ones are declared in optuna_compat, with a test that they still exist).
_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials", "get_best_trial", "get_trial_params",
    "get_trial_user_attrs", "get_trial_system_attrs", "record_heartbeat", *optuna_compat.RDB_PRIVATE_METHODS,
)


class RetryingRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose calls wait out a database that is briefly unreachable.

    Connections broken by a server restart are replaced (SQLAlchemy's pool_pre_ping); calls
    made while it is down are retried. A retried write that had in fact committed before the
    connection broke is rare; for trial states it is recognised (see set_trial_state_values),
    and a duplicated new trial has no worker and is failed by the next claim (`fail_stale`).
    """

    wait_s: float = 600.0
    recovered_at: float = 0.0  # time.time() when this process last saw the database come back

    def _recovered(self) -> None:
        self.recovered_at = time.time()

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        attempts = []

        def call() -> bool:
            attempts.append(1)
            try:
                return RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if len(attempts) > 1 and RDBStorage.get_trial(self, trial_id).state == state:
                    return True  # our first attempt committed before the connection broke
                raise

        return with_retry(call, self.wait_s, "set_trial_state_values", self._recovered)


def _retrying(name: str) -> Callable[..., Any]:
    method = getattr(RDBStorage, name)

    @functools.wraps(method)
    def wrapper(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return with_retry(lambda: method(self, *args, **kwargs), self.wait_s, name, self._recovered)

    return wrapper


for _name in _RETRIED:
    setattr(RetryingRDBStorage, _name, _retrying(_name))


def open_study(spec: StudySpec, url: str | None, out_dir: Path, worker: int, wait_s: float = 600.0) -> optuna.Study:
    """The study's Optuna study (created on first use) with its pruner, and its sampler seeded
    for this worker."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=spec.name, storage=make_storage(url, out_dir, wait_s),
                                direction=spec.objective.direction, pruner=spec.make_pruner(), load_if_exists=True)
    # Sampler seeds: seed + worker on a fresh study (reproducible), moved on by the trials already
    # there, so that a resumed study does not draw its first samples again, and by the host on a
    # database, so that two machines' worker 0 do not draw alike.
    offset = worker + 1009 * len(study.get_trials(deepcopy=False))
    if url and not url.startswith("journal:"):
        offset += zlib.crc32(socket.gethostname().encode()) % 100_003
    study.sampler = spec.make_sampler(offset)
    return study


def make_storage(url: str | None, out_dir: Path, wait_s: float = 600.0) -> optuna.storages.BaseStorage:
    """The study's storage: a journal file in out_dir (default, or 'journal:PATH'), else a database."""
    if url is None or url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")) if url else out_dir / "optuna.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    with warnings.catch_warnings():  # heartbeats are marked experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(5):
            try:
                storage = RetryingRDBStorage(
                    url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                    engine_kwargs={"pool_pre_ping": True})
                break
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError) as e:
                # Machines starting together on an empty database race to create Optuna's tables
                # ("duplicate key value violates unique constraint"); the loser finds them made.
                if attempt == 4:
                    raise StorageUnavailable(f"cannot open the Optuna storage {mask_url(url)}: "
                                             f"{first_line(e, cause=True)}", at_start=True) from e
                time.sleep(0.5 * (attempt + 1))
            except (sa_exc.SQLAlchemyError, ImportError, ValueError) as e:  # before any work: one line
                # (ValueError: a URL that does not parse, e.g. a port that is not a number)
                raise StorageUnavailable(f"cannot open the Optuna storage {mask_url(url)}: "
                                             f"{first_line(e, cause=True)}", at_start=True) from e
    storage.wait_s = wait_s
    return storage


def heartbeats_trustworthy(study: optuna.Study) -> bool:
    """May missing heartbeats be read as dead workers? Not until a full grace period has
    passed since the database came back (restart or outage): during the outage no worker
    could write one, so every running trial looks stale for a while."""
    storage = backend(study)
    if not isinstance(storage, RetryingRDBStorage):
        return True
    quiet = GRACE_S + HEARTBEAT_S
    if time.time() - storage.recovered_at < quiet:
        return False
    if storage.engine.dialect.name == "postgresql":  # also covers workers that joined after a restart
        with storage.engine.connect() as conn:
            up_s = conn.execute(sqlalchemy.text(
                "SELECT extract(epoch FROM now() - pg_postmaster_start_time())")).scalar()
        return float(up_s) >= quiet
    return True


def _lock_key(study_name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, one per study."""
    return int.from_bytes(hashlib.sha1(f"vicreg-sweeps/{study_name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def claim_lock(study: optuna.Study, out_dir: Path) -> Iterator[None]:
    """Serialises claiming a trial among all workers of the study: a PostgreSQL advisory lock
    when the study is there (any machine), else a file lock in out_dir (one machine, or a
    shared folder that supports flock)."""
    storage = backend(study)
    if isinstance(storage, RetryingRDBStorage) and storage.engine.dialect.name == "postgresql":
        key = _lock_key(study.study_name)

        def acquire() -> sqlalchemy.Connection:
            conn = storage.engine.connect()
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                conn.commit()
            except BaseException:
                conn.invalidate()
                raise
            return conn

        conn = with_retry(acquire, storage.wait_s, "claim lock", storage._recovered)
        try:
            yield
        finally:
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
                conn.close()
            except sa_exc.SQLAlchemyError:
                conn.invalidate()  # the server dropped the session, and the lock with it
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(out_dir / "claim.lock"):
        yield
