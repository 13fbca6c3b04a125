"""sweeps/worker.py: its entry takes explicit arguments and the storage from the environment;
a --dry-run worker loads no torch."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna

from tests.helpers import REPO, write_study


def test_worker_entry_takes_explicit_arguments_and_the_storage_from_the_environment(env, monkeypatch, capsys) -> None:
    """`python -m sweeps.worker` (what run.py starts): every setting an argument, the storage
    URL from VICREG_SWEEP_STORAGE only; a bad study file is one line and exit 2."""
    from sweeps.worker import STORAGE_ENV
    from sweeps.worker import main as worker_main

    study = write_study(env["dir"], env["root"])
    journal = env["dir"] / "elsewhere.journal"
    monkeypatch.setenv(STORAGE_ENV, f"journal:{journal}")
    assert worker_main(["--config", str(study), "--trials", "2", "--out", str(env["dir"] / "w"), "--index", "1",
                        "--tracking-uri", env["uri"], "--dry-run"]) == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name="tiny-dryrun", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert {t.user_attrs["worker"] for t in trials} == {1}
    assert not (env["dir"] / "w" / "optuna.journal").exists()
    bad = write_study(env["dir"], env["root"], name="bad", colour=1)
    capsys.readouterr()
    assert worker_main(["--config", str(bad), "--trials", "1", "--out", str(env["dir"] / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'colour'" in err[0], err


def test_a_dry_run_worker_never_imports_torch(env) -> None:
    """A --dry-run worker checks a many-machine set-up: it must start in seconds, so it loads no
    torch (before, sweeps/best.py pulled it in through vicreg.data for one sentence)."""
    study = write_study(env["dir"], env["root"])
    code = ("import sys\nfrom sweeps.worker import main\n"
            f"rc = main(['--config', {str(study)!r}, '--trials', '2', '--out', {str(env['dir'] / 'w')!r}, "
            f"'--no-tracking', '--dry-run'])\n"
            "print(rc, sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=env["dir"],
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout + out.stderr
