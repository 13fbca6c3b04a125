"""sweeps/optuna_compat.py: every private Optuna name we use exists in the installed Optuna,
a moved one is named in one line, and the wrappers do what the worker relies on."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweeps import optuna_compat


def test_every_private_name_is_there() -> None:
    assert optuna_compat.check() == []
    assert int(optuna.__version__.split(".")[0]) == optuna_compat.TESTED_MAJOR
    optuna_compat.require()


@pytest.mark.parametrize("module, name", [
    ("optuna.storages._heartbeat", "get_heartbeat_thread"),
    ("optuna.storages._heartbeat", "is_heartbeat_enabled"),
])
def test_a_moved_name_is_named(monkeypatch, module: str, name: str) -> None:
    import importlib

    monkeypatch.delattr(importlib.import_module(module), name)
    assert optuna_compat.check() == [f"{module}.{name}"]
    with pytest.raises(optuna_compat.OptunaMoved, match=rf"moved {module}\.{name}, which sweeps/optuna_compat.py uses"):
        optuna_compat.require()


def test_a_moved_storage_method_is_named(monkeypatch) -> None:
    monkeypatch.delattr(optuna.storages.RDBStorage, "_get_trials")
    assert optuna_compat.check() == ["optuna.storages.RDBStorage._get_trials"]


def test_wrappers_fail_a_trial_and_read_it_back(tmp_path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    trial = study.ask()
    with optuna_compat.heartbeat(study, trial):  # no heartbeat configured: a no-op thread
        pass
    assert not optuna_compat.heartbeat_enabled(study)
    frozen = study.get_trials(deepcopy=False)[0]
    optuna_compat.set_user_attr(study, frozen, "note", 1)
    optuna_compat.fail(study, frozen, "worker died (stale trial)")
    stored = optuna_compat.stored_trial(study, trial)
    assert stored.state == TrialState.FAIL and stored.user_attrs == {"note": 1, "reason": "worker died (stale trial)"}
    assert isinstance(optuna_compat.backend(study), optuna.storages.RDBStorage)
