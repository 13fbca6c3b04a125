"""Shared fixtures: tiny configs, a small synthetic DRAC22-format dataset, a PostgreSQL
server; and a terminal-summary section for figures the tests measure along the way."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from vicreg.config import Config, load_config

# As sweeps/tracking/__init__.py sets it, before a test module imports mlflow first.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Torch threads: the cores shared between pytest-xdist's workers, at most two (torch's OpenMP threads
# spin while they wait: on 2 cores, two workers of 2 threads each ran the documented commands 3.5
# times slower than of 1 thread each). Subprocesses inherit the count through OMP_NUM_THREADS: the
# kill-and-resume test compares a subprocess sweep with an in-process one bit for bit, and float
# sums depend on the thread count.
THREADS = max(1, min(2, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))
os.environ["OMP_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


def tiny_config(tmp: Path | None = None, **sets: object) -> Config:
    """A config small enough for a CPU test: 32 px, batch 16, expander 64-64, and the ResNet's
    ImageNet stem (7x7/2 conv + pool), which costs a seventh of the CIFAR stem's step at 32 px on
    this machine: the tests check plumbing, not features (tests/vicreg/test_model.py tests the
    stem rule, and the learning tests pick their stem themselves)."""
    overrides = {
        "data.image_size": 32, "data.batch_size": 16, "model.small_stem": False, "model.expander_hidden": 64,
        "model.expander_out": 64, "model.expander_layers": 2, "optim.name": "adam",
        "optim.lr": 1e-3, "optim.warmup_epochs": 0.0, "train.epochs": 2, "train.progress": False,
    }
    if tmp is not None:
        overrides["data.cache_dir"] = str(tmp / "cache")
    overrides.update(sets)
    return load_config(None, [f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 labelled + 20 test synthetic images of 96 px, made once per session."""
    from vicreg.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, count=60, size=96, seed=0, test_count=20)
    return root


@pytest.fixture(scope="session")
def synthetic_images(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The synthetic training set at 32 px as an ImageSet."""
    from vicreg.data import load_datasets

    cache = tmp_path_factory.mktemp("cache")
    cfg = tiny_config(**{"data.dataset": "synthetic", "data.root": str(synthetic_root),
                         "data.cache_dir": str(cache)})
    return load_datasets(cfg.data)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL on loopback (devtools/postgres.py). Skips when it cannot start, except in
    CI (.ci/run sets CI=1), where that is a failure: `make test` installs the package."""
    from devtools.postgres import start_postgres

    try:
        server = start_postgres()
    except (RuntimeError, OSError, KeyError) as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL could not start in CI: {e}")
        pytest.skip(f"PostgreSQL could not start: {e}")
    yield server
    server.remove()


@pytest.fixture()
def report(request: pytest.FixtureRequest):
    """report(line): a figure the test measured, printed in the run's terminal summary. Kept on
    the test's user_properties, which pytest-xdist carries from its workers to the summary."""
    return lambda line: request.node.user_properties.append(("measured", line))


_UNGROUPED = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under --dist loadgroup, pytest-xdist sends the tests of one xdist_group to one worker by
    suffixing their ids with @GROUP. When a pytest/xdist pair stops doing that, a group's costly
    fixture is silently built on every worker: its tests then fail, saying so (an error raised
    here would reach the controller as an xdist internal error without this message)."""
    if config.getoption("loadgroup", False) and any(
            i.get_closest_marker("xdist_group") and "@" not in i.nodeid for i in items):
        config.stash[_UNGROUPED] = (f"--dist loadgroup is not grouping xdist_group tests: this pytest-xdist "
                                    f"does not support pytest {pytest.__version__} (see pyproject.toml's dev extra)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("xdist_group") and _UNGROUPED in item.config.stash:
        pytest.fail(item.config.stash[_UNGROUPED], pytrace=False)


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    lines = [value for key in ("passed", "failed") for rep in terminalreporter.stats.get(key, [])
             if getattr(rep, "when", "") == "call" for name, value in rep.user_properties if name == "measured"]
    if lines:
        terminalreporter.section("measured by the tests")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def new_store(tmp_path_factory: pytest.TempPathFactory):
    """new_store(folder) -> the URI of an empty MLflow SQLite store at folder/mlflow.db.

    A copy of one store made once per session: a new store runs MLflow's schema migrations
    (1.3 s on this machine), a copy takes 0.03 s. Creating a store from nothing stays tested:
    tests/test_docs.py runs the documented sweeps in a fresh folder."""
    from mlflow.tracking import MlflowClient

    template = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()  # creates the tables

    def make(folder: Path) -> str:
        shutil.copyfile(template, folder / "mlflow.db")
        return f"sqlite:///{folder / 'mlflow.db'}"

    return make


@pytest.fixture()
def env(tmp_path: Path, synthetic_root: Path, monkeypatch, new_store) -> dict:
    """A sweep's working folder: cwd (mlruns/ and runs/ land here), the synthetic set, and an
    empty SQLite MLflow store in it."""
    monkeypatch.chdir(tmp_path)
    return {"dir": tmp_path, "root": synthetic_root, "uri": new_store(tmp_path)}
