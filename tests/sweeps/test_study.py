"""sweeps/study.py and space.py: the shipped study files load, each optimiser has its own
learning-rate range, conditional entries are checked, every experiments/*.yaml resolves."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweeps import optuna_compat
from sweeps.run import main
from tests.helpers import REPO, sweep_args, write_study


def test_shipped_studies_load() -> None:
    from sweeps.study import load_study, study_path

    for name in ("demo", "drac22", "cifar10"):
        s = load_study(study_path(name))
        assert s.search and s.budget.trials >= 1
    drac22 = load_study(study_path("drac22"))
    # Hyperband spans one trial's whole epoch budget: the top of the searched train.epochs.
    searched = next(d for d in drac22.search if d.key == "train.epochs")
    top = max(searched.choices) if searched.kind == "choice" else searched.high
    assert optuna_compat.hyperband_max_resource(drac22.make_pruner()) == drac22.max_epochs == top
    for name in ("demo", "drac22", "cifar10"):  # each optimiser its own learning-rate range
        lr = next(d for d in load_study(study_path(name)).search if d.key == "optim.lr")
        assert lr.kind == "by" and lr.by == "optim.name" and set(lr.cases) == {"lars", "sgd", "adam"}


def test_learning_rate_range_follows_the_optimiser(env) -> None:
    study = write_study(env["dir"], env["root"], budget={"trials": 6}, search={
        "optim.name": {"choice": ["adam", "lars"]},
        "optim.lr": {"by": "optim.name", "adam": {"float": [1e-4, 1e-3], "log": True},
                     "lars": {"float": [0.1, 1.0], "log": True}}})
    doc = yaml.safe_load(study.read_text())
    doc["base"]["train"]["epochs"] = 1
    study.write_text(yaml.safe_dump(doc))
    assert main(sweep_args(env, study, "--dry-run")) == 0
    assert not (env["dir"] / "best").exists()  # a dry run leaves no best-configurations file
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(env["dir"] / "runs" / "optuna.journal")))
    trials = optuna.load_study(study_name="tiny-dryrun", storage=storage).trials
    assert {t.params["optim.name"] for t in trials} == {"adam", "lars"}
    for t in trials:
        name = t.params["optim.name"]
        lr = t.params[f"optim.lr[{name}]"]
        assert (1e-4 <= lr <= 1e-3) if name == "adam" else (0.1 <= lr <= 1.0)
        assert t.user_attrs["config"]["optim.lr"] == lr  # the trainer gets it under optim.lr
    client = MlflowClient(env["uri"])
    runs = client.search_runs([client.get_experiment_by_name("tiny-dryrun").experiment_id],
                              "tags.`vicreg.role` = 'trial'")
    assert all(r.data.params["optim.lr"] for r in runs)


@pytest.mark.parametrize("search, match", [
    ({"optim.lr": {"by": "optim.name", "adam": {"float": [1e-4, 1e-3]}}}, "must name a choice entry of the search"),
    ({"optim.name": {"choice": ["adam", "sgd"]}, "optim.lr": {"by": "optim.name", "adam": {"float": [1e-4, 1e-3]}}},
     "needs one range for each choice of optim.name"),
])
def test_bad_conditional_entries_are_one_line_errors(env, capsys, search, match) -> None:
    study = write_study(env["dir"], env["root"], search=search)
    assert main(sweep_args(env, study)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err


@pytest.mark.parametrize("path", sorted((REPO / "experiments").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_experiment_file_loads_and_resolves(path: Path) -> None:
    """Each shipped study file loads and its base resolves to a checked config, with every
    searched key's first choice (or low end) applied; the one plain config loads as a config."""
    from sweeps.study import load_study
    from vicreg.config import load_config

    if path.stem == "pretrain_synthetic":
        assert load_config(path).train.checkpoint_dir == "runs/pretrain-synthetic"
        return
    spec = load_study(path)
    values = {}
    for d in spec.search:
        if d.kind == "by":
            d = d.cases[values[d.by]]
        values[d.key] = d.choices[0] if d.kind == "choice" else d.low
    cfg = spec.config(values, {"model.init": "random"})
    assert spec.name == path.stem
    assert cfg.train.epochs == values.get("train.epochs", spec.max_epochs)
