"""sweeps/resume.py and the confirm stage's config: what the Optuna storage holds is data. A
planted checkpoint folder, retried trial number or stored path key never decides a folder
that a worker writes or deletes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import optuna

from sweeps.confirm import confirm_config
from sweeps.context import SweepContext
from sweeps.resume import checkpoint_dir, trial_checkpoints, trial_folder
from sweeps.study import load_study
from tests.conftest import tiny_config
from tests.helpers import write_study
from vicreg.config import flatten


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    return victim


def test_a_planted_checkpoint_dir_deletes_nothing(tmp_path) -> None:
    """Trial 0 failed with a stored checkpoint_dir pointing at a folder of the user's; trial 1
    retries it. The retry looks in out/checkpoints/trial0000 (its number's folder), finds no
    checkpoint, clears that folder only, and the planted one is untouched; completing the
    trial deletes only its own folder."""
    victim = _victim(tmp_path)
    study = optuna.create_study()
    failed = study.ask()
    failed.set_user_attr("checkpoint_dir", str(victim))
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    retry = study.ask()
    retry.set_user_attr("retry_of", 0)
    spec = SimpleNamespace(checkpoint_every=1, keep_checkpoints=False)
    ctx = SimpleNamespace(out_dir=tmp_path / "out", spec=spec)
    folder, resume = checkpoint_dir(ctx, retry)
    assert folder == trial_folder(ctx, 0) == tmp_path / "out" / "checkpoints" / "trial0000" and resume.from_trial == 0
    cfg, resume = trial_checkpoints(retry, ctx, tiny_config())
    assert resume is None and cfg.train.checkpoint_dir == str(folder)  # nothing usable: starts over there
    SweepContext.drop_checkpoints(ctx, tiny_config(**{"train.checkpoint_dir": str(victim)}))
    assert (victim / "precious.txt").read_text() == "keep me"


def test_planted_retry_numbers_are_ignored(tmp_path) -> None:
    """A retry_of that is not an earlier trial of this study (a later one, itself, negative,
    a path, a bool) leaves the trial in its own folder, resuming nothing."""
    study = optuna.create_study()
    ctx = SimpleNamespace(out_dir=tmp_path / "out")
    for planted in (99, "itself", -1, "../../etc", True, None):
        trial = study.ask()
        trial.set_user_attr("retry_of", trial.number if planted == "itself" else planted)
        folder, resume = checkpoint_dir(ctx, trial)
        assert folder == trial_folder(ctx, trial.number) and resume is None, planted
        study.tell(trial, state=optuna.trial.TrialState.FAIL)


def test_confirm_takes_paths_from_the_study_not_the_stored_trial(tmp_path, synthetic_root) -> None:
    """A stored trial config whose cache_dir and folds_file point elsewhere: the confirm run's
    config uses the study file's (and the command line's) paths."""
    spec = load_study(write_study(tmp_path, synthetic_root))
    stored = flatten(spec.config({})) | {"data.cache_dir": str(tmp_path / "elsewhere"),
                                        "data.folds_file": str(tmp_path / "elsewhere" / "folds.csv")}
    trial = SimpleNamespace(number=3, user_attrs={"config": stored})
    ctx = SimpleNamespace(spec=spec, overrides={}, progress=False, out_dir=tmp_path / "out")
    cfg = confirm_config(ctx, trial, 1000)
    assert cfg.data.cache_dir == spec.config({}).data.cache_dir == str(tmp_path / "cache")
    assert cfg.data.folds_file is None and cfg.train.seed == 1000
    assert cfg.train.checkpoint_dir == str(tmp_path / "out" / "confirm" / "ckpt-trial0003-seed1000")


def test_a_retry_of_a_retry_resumes_in_the_first_trials_folder(tmp_path) -> None:
    """Trial 0 killed, trial 1 retries it (and checkpoints in trial0000), trial 1 terminated,
    trial 2 retries trial 1: it resumes from trial0000 too, whatever trial 1 stored."""
    study = optuna.create_study()
    ctx = SimpleNamespace(out_dir=tmp_path / "out")
    first = study.ask()
    study.tell(first, state=optuna.trial.TrialState.FAIL)
    second = study.ask()
    second.set_user_attr("retry_of", 0)
    second.set_user_attr("checkpoint_dir", str(tmp_path / "planted"))
    study.tell(second, state=optuna.trial.TrialState.FAIL)
    third = study.ask()
    third.set_user_attr("retry_of", 1)
    folder, resume = checkpoint_dir(ctx, third)
    assert folder == trial_folder(ctx, 0) and resume.from_trial == 1
