"""The null test, end to end: a sweep and its confirm stage on permuted labels confirm nothing,
and its positive control (a leak into VICReg's scoring only) makes the same checks fail."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

from sweeps.run import main
from tests.helpers import env_optuna, env_runs, sweep_args, write_study

NULL_IMAGES, NULL_HOLDOUT, NULL_FOLDS = 400, 0.4, 3
NULL_SETS = {"shuffle_labels": True, "holdout": NULL_HOLDOUT, "batch_size": 32, "folds": NULL_FOLDS}
NULL_EVAL = {"baselines": True, "epochs": 60, "lr": 1e-2}

def _null_root(tmp_path_factory) -> Path:
    from vicreg.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("null") / "d"
    make_synthetic(root, count=NULL_IMAGES, size=48, seed=3, test_count=0)
    return root


def _null_study(env, tmp_path_factory, seeds: int) -> Path:
    """The null test's study: labels permuted, so no encoder can predict them; 400 synthetic
    images, 160 in the hold-out; heads trained long enough to memorise their training images
    (a linear layer on standardised 512-d features of 240 images, 60 epochs at lr 1e-2), so
    that any image the head trains on and is then scored on shows."""
    study = write_study(env["dir"], _null_root(tmp_path_factory), confirm={"top_k": 1, "seeds": seeds},
                        budget={"trials": 2}, log_checkpoint=False)
    doc = yaml.safe_load(study.read_text())
    doc["base"]["data"].update(NULL_SETS)
    doc["base"]["eval"].update(NULL_EVAL)
    doc["base"]["train"]["epochs"] = 1
    study.write_text(yaml.safe_dump(doc))
    return study


def _permuted_kappas(labels: list[np.ndarray], preds: list[np.ndarray], draws: int,
                     rng: np.random.Generator) -> np.ndarray:
    """(draws,): the mean over the (labels, preds) pairs of kappa with each pair's labels
    permuted; pairs with the same label vector object share the permutation (one hold-out
    scored by every seed), the others are permuted apart (different images)."""
    from vicreg.verdict import scores_of

    c, out, perms = 3, np.zeros(draws), {}
    for y, p in zip(labels, preds):
        if id(y) not in perms:
            perms[id(y)] = rng.permuted(np.tile(y, (draws, 1)), axis=1)
        cell = (np.arange(draws)[:, None] * c + perms[id(y)]) * c + p[None]
        out += scores_of(np.bincount(cell.ravel(), minlength=draws * c * c).reshape(draws, c, c), "kappa")
    return out / len(labels)


def _null_bounds(reports: list, draws: int = 4000) -> dict[str, float]:
    """Bounds on VICReg's mean hold-out and CV kappa when labels say nothing, measured on these
    runs' own predictions by permuting their labels again (the null distribution given how
    often each grade is predicted, imbalance included): the 99.7% quantile of |kappa| (a
    correct tool fails about 0.003 of the time), and the leak that exceeds it with 80% power,
    bound + 0.84 null SD. The hold-out's pairs share one label vector (every seed scores the
    same images); the CV's are each seed's folds, rebuilt from the fold confusion matrices,
    and the largest bound over seeds is kept (a mean over seeds is no noisier than its seeds)."""
    rng = np.random.default_rng(0)
    y = np.asarray(reports[0].holdout_labels)
    hold = _permuted_kappas([y] * len(reports), [np.asarray(r.holdout_probs).argmax(1) for r in reports], draws, rng)
    cv = []
    for r in reports:
        confs = [np.asarray(f.metrics["confusion"]).astype(int) for f in r.folds]
        cv.append(_permuted_kappas([np.repeat(np.arange(3), m.sum(1)) for m in confs],
                                   [np.repeat(np.arange(3), m.sum(0)) for m in confs], draws, rng))
    z80 = stats.norm.ppf(0.8)
    hold_bound = float(np.quantile(np.abs(hold), 0.997))
    cv_bound = max(float(np.quantile(np.abs(x), 0.997)) for x in cv)
    return {"holdout": hold_bound, "cv": cv_bound, "holdout_leak80": hold_bound + z80 * float(hold.std()),
            "cv_leak80": cv_bound + z80 * max(float(x.std()) for x in cv)}


def _confirmed_reports(out: Path, label: str = "vicreg") -> list:
    from vicreg.evaluate import EvalReport

    runs = [json.loads(p.read_text()) for p in sorted((out / "confirm").glob("trial*-seed*.json"))]
    return [EvalReport.from_dict(d) for r in runs for d in r["reports"] if d["label"] == label]


@pytest.mark.slow
def test_null_sweep_with_permuted_labels_confirms_nothing(env, tmp_path_factory, capsys, report) -> None:
    """The null test: a 2-trial sweep on permuted labels, then the confirm stage (best
    configuration, 2 fresh seeds, then a 3rd on demand). Its confirmed CV and hold-out kappa
    must be inside the bounds of the null distribution measured on its own predictions
    (_null_bounds), and the primary verdict may not say pretraining helped.

    Its power, measured when written (160 hold-out images x 3 seeds, 240 CV images in 3 folds):
    bounds 0.13 (hold-out) and 0.20 (CV); a leak that adds +0.17 to the hold-out kappa or +0.25
    to the CV kappa is caught with 80% power; a leak into VICReg alone is called "helped" with
    80% power only from the verdict's detectable effect, 0.37 kappa here (3 seeds). Smaller
    leaks can pass: this test catches gross leaks only. Its positive control:
    test_a_vicreg_only_leak_makes_the_null_test_fail."""
    study = _null_study(env, tmp_path_factory, seeds=2)
    assert main(sweep_args(env, study)) == 0
    out = capsys.readouterr().out
    assert "confirmed: top 1 configurations pretrained again with 2 seeds" in out
    client, parents, trials = env_runs(env)
    exp = client.get_experiment_by_name("tiny")
    assert len(client.search_runs([exp.experiment_id], "tags.stage = 'confirm'")) == 2
    # On demand, resumed: the 2 stored confirm runs are reused, a 3rd seed adds one run.
    assert main(sweep_args(env, study, "--confirm", "--seeds", "3")) == 0
    out = capsys.readouterr().out
    best = yaml.safe_load((env["dir"] / "best" / "tiny.yaml").read_text())
    (top,) = best["confirmed"]
    vic = top["scores"]["vicreg"]
    reports = _confirmed_reports(env["dir"] / "runs")
    bounds = _null_bounds(reports)
    assert len(reports) == 3
    report(f"null test (permuted labels): confirmed hold-out kappa {vic['holdout_kappa']:+.3f} (bound "
           f"{bounds['holdout']:.3f}; a leak of {bounds['holdout_leak80']:+.2f} is caught with 80% power), CV "
           f"{vic['cv_kappa']:+.3f} (bound {bounds['cv']:.3f}; {bounds['cv_leak80']:+.2f}); {best['primary_verdict']}")
    assert abs(vic["holdout_kappa"]) < bounds["holdout"], (vic, bounds)
    assert abs(vic["cv_kappa"]) < bounds["cv"], (vic, bounds)
    assert top["seeds"] == 3 and {"random-init", "raw-pixels"} <= set(top["scores"])
    assert [line.split(":")[0] for line in best["verdict"]] == [
        "pretraining vs random-init on the hold-out", "pretraining vs raw-pixels on the hold-out"]
    assert [line.split(":")[0] for line in best["cv_verdict"]] == [
        "pretraining vs random-init on the selection folds (optimistic)",
        "pretraining vs raw-pixels on the selection folds (optimistic)"]
    assert best["primary_verdict"].startswith("verdict: pretraining ")
    assert not best["primary_verdict"].startswith("verdict: pretraining helped")
    assert re.search(r"^quote: hold-out kappa [-.\d]+ \(95% CI [-.\d]+\.\.[-.\d]+, 160 images x 3 seeds\)",
                     out, re.M)
    assert "confirmed: top 1 configurations pretrained again with 3 seeds" in out
    assert "baselines on the same CV folds and head seed, no pretraining: random-init CV kappa" in out
    assert "but not the hold-out's: the CV verdict includes that advantage" in out
    for line in [best["primary_verdict"], *best["verdict"], *best["cv_verdict"]]:
        assert line in out
    # MLflow: 3 confirm runs under the parent, apart from the 2 trials; the verdicts on the parent.
    client, parents, trials = env_runs(env)
    assert len(trials) == 2 and len(env_optuna(env).trials) == 2
    confirm = client.search_runs([exp.experiment_id], "tags.stage = 'confirm'")
    assert len(confirm) == 3 and all(r.info.status == "FINISHED" for r in confirm)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in confirm)
    assert all("kappa_holdout" in r.data.metrics for r in confirm)
    assert all("kappa_holdout" not in r.data.metrics for r in trials)  # no trial ever scores it
    # Fresh seeds: none replays the trials' seed 0, and each run records both.
    assert {r.data.params["train.seed"] for r in confirm} == {"1000", "1001", "1002"}
    assert {r.data.params["trial_seed"] for r in confirm} == {"0"}
    assert {r.data.params["train.seed"] for r in trials} == {"0"}
    parent = client.get_run(parents[0].info.run_id)
    assert parent.data.tags["verdict"] == best["primary_verdict"]
    assert parent.data.tags["verdict.random-init"] == best["verdict"][0]
    assert parent.data.tags["cv_verdict.random-init"] == best["cv_verdict"][0]
    assert "quoted_holdout_kappa_ci_lo" in parent.data.metrics and "verdict_random-init_diff" in parent.data.metrics
    note = parent.data.tags["mlflow.note.content"]  # the run page's description: the study's report
    assert best["primary_verdict"] in note and "confirmed: top 1 configurations" in note and "quote:" in note


def _leaky_fold_split(folds: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The positive control's leak: the fold's head also trains on the images it is scored on
    (its validation fold and the hold-out, with their labels)."""
    return np.arange(len(folds)), np.flatnonzero(folds == k)


@pytest.mark.slow
def test_a_vicreg_only_leak_makes_the_null_test_fail(tmp_path_factory, monkeypatch, report) -> None:
    """The positive control, for the verdict as well as the bounds: on the null test's permuted
    labels, VICReg's heads, and only VICReg's, also train on the images they are scored on. The
    null test's checks must then fail: VICReg's hold-out and CV kappa above their bounds, and
    the primary verdict "pretraining helped". Called in-process (evaluate and the baselines,
    3 seeds), as the confirm stage scores a seed, without a sweep: the leak is in scoring.
    Measured when written: hold-out kappa +0.89 and CV +0.80 against bounds of about 0.2."""
    import dataclasses

    import vicreg.evaluate.protocol
    from tests.conftest import tiny_config
    from vicreg.data import load_datasets, make_folds
    from vicreg.evaluate import EvalData, evaluate
    from vicreg.evaluate.baselines import baseline_encoder, score_baselines
    from vicreg.verdict import HELPED, holdout_verdicts, primary

    root, tmp = _null_root(tmp_path_factory), tmp_path_factory.mktemp("leak")
    sets = {f"data.{k}": v for k, v in NULL_SETS.items()} | {f"eval.{k}": v for k, v in NULL_EVAL.items()}
    cfg = tiny_config(tmp, **{"data.dataset": "synthetic", "data.root": str(root), "data.image_size": 16,
                              "eval.protocol": "linear", **sets})
    data = load_datasets(cfg.data, cfg.model.in_channels)
    folds = make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed, None,
                       cfg.data.holdout)
    scored = EvalData(data.train.images, data.train.labels, folds)
    vic, base = [], {}
    for seed in (1000, 1001, 1002):
        encoder = baseline_encoder("random-init", cfg, seed)  # labels are permuted: no encoder could help
        with monkeypatch.context() as m:
            m.setattr(vicreg.evaluate.protocol, "fold_split", _leaky_fold_split)
            vic.append(evaluate(encoder, scored, dataclasses.replace(cfg.eval, seed=seed), "cpu", "vicreg", True))
        for r in score_baselines(cfg, scored, "cpu", seed, True):
            base.setdefault(r.label, []).append(r)
    bounds = _null_bounds(vic)
    head = primary(holdout_verdicts(vic, base))
    hold = np.mean([r.holdout["kappa"] for r in vic])
    cv = np.mean([r.summary["kappa_mean"] for r in vic])
    report(f"null test's positive control (VICReg's heads leak): hold-out kappa {hold:+.3f} (bound "
           f"{bounds['holdout']:.3f}), CV {cv:+.3f} (bound {bounds['cv']:.3f}); {head['line']}")
    assert hold > bounds["holdout"] and cv > bounds["cv"], (hold, cv, bounds)
    assert head["outcome"] == HELPED, head
