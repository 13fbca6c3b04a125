"""sweeps/storage.py: what counts as the database being away, and waiting it out. (Sweeps
through a real PostgreSQL restart: tests/test_postgres.py.)"""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy.exc as sa_exc

from sweeps.storage import StorageUnavailable, transient, with_retry


def _chained(outer: BaseException, inner: BaseException) -> BaseException:
    """`outer` raised while `inner` was being handled, as Python chains them."""
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 -- the implicit chain is what is under test
    except BaseException as e:
        return e


def test_a_connection_error_anywhere_in_the_chain_is_transient() -> None:
    cut = sa_exc.OperationalError("select 1", {}, Exception("terminating connection due to administrator command"))
    assert transient(cut)
    # What a PostgreSQL restart raised mid-sweep: Optuna's _get_trials fallback ran in the session
    # the restart had cut (PendingRollbackError, its context the OperationalError), wrapped by
    # Optuna's session handler in StorageInternalError. It once ended the worker.
    pending = _chained(sa_exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back"), cut)
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = pending
    assert transient(wrapped)
    # The same wrappers around an error the database would give again: not retried.
    bad = _chained(sa_exc.PendingRollbackError("rolled back"), sa_exc.IntegrityError("insert", {}, Exception("dup")))
    data = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    data.__cause__ = bad
    assert not transient(data) and not transient(ValueError("no"))


def test_with_retry_waits_out_an_outage_and_then_gives_up(capsys) -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sa_exc.OperationalError("select 1", {}, Exception("connection refused"))
        return "ok"

    assert with_retry(flaky, wait_s=30, what="a test") == "ok" and len(calls) == 3
    assert "reachable again after an outage (a test)" in capsys.readouterr().err

    def down() -> None:
        raise sa_exc.OperationalError("select 1", {}, Exception("connection refused"))

    with pytest.raises(StorageUnavailable, match=r"unreachable for 0 s \(during a test\); giving up"):
        with_retry(down, wait_s=0.3, what="a test")
    with pytest.raises(ValueError, match="not transient"):  # not a connection problem: no retry
        with_retry(lambda: (_ for _ in ()).throw(ValueError("not transient")), wait_s=30, what="a test")
