"""The confirm stage's rules, without training: fresh and disjoint seeds, the ranking by
confirmed CV (never the hold-out), divergence in the ranking and the table, registration of
the CV winner, the winner's curse that the quote seeds remove, and the study report."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

import sweeps.confirm
from sweeps.confirm import confirm_seeds, rank_key, register_best
from sweeps.reports import confirmed_table, study_report, verdict_lines


def test_confirm_seeds_never_equal_the_trial_seed_and_quote_seeds_are_disjoint() -> None:
    assert confirm_seeds(0, 3) == [1000, 1001, 1002] and confirm_seeds(0, 3, quote=True) == [1500, 1501, 1502]
    for trial_seed in (0, 5, 999, 1000, 1001, 2500):
        for n in (1, 5, 499):
            ranking, quote = confirm_seeds(trial_seed, n), confirm_seeds(trial_seed, n, quote=True)
            assert trial_seed not in ranking + quote and len(set(ranking + quote)) == 2 * n


def _entry(trial: int, cv: float, diverged: int, seeds: int = 3, holdout: float | None = None) -> dict:
    vic = {"cv_kappa": cv, "cv_kappa_std": 0.01, "pooled_kappa": cv,
           "holdout_kappa": cv - 0.05 if holdout is None else holdout, "holdout_kappa_std": 0.02}
    return {"trial": trial, "seeds": seeds, "seed_values": [1000 + i for i in range(seeds)],
            "diverged_seeds": diverged, "scores": {"vicreg": vic,
                                                  "random-init": {"cv_kappa": 0.3, "holdout_kappa": 0.28}},
            "verdicts": [], "cv_verdicts": [], "mlflow_run_ids": [f"run-{trial}-{i}" for i in range(seeds)]}


def test_ranking_follows_confirmed_cv_not_the_holdout() -> None:
    """Hold-out scores in the opposite order to the CV scores: the ranking follows the CV
    (a ranking by hold-out would put trial 1 first)."""
    entries = [_entry(1, 0.60, 0, holdout=0.9), _entry(2, 0.70, 0, holdout=0.5), _entry(3, 0.65, 0, holdout=0.7)]
    assert [e["trial"] for e in sorted(entries, key=rank_key)] == [2, 3, 1]


def test_a_configuration_with_a_diverged_seed_ranks_after_those_without() -> None:
    """Trial 1 has the best CV kappa on its one surviving seed; it still ranks last."""
    entries = [_entry(1, 0.90, diverged=2), _entry(2, 0.60, 0), _entry(3, 0.70, 0)]
    ranked = sorted(entries, key=rank_key)
    assert [e["trial"] for e in ranked] == [3, 2, 1]
    for rank, e in enumerate(ranked, start=1):
        e["rank"] = rank
    table = confirmed_table(ranked, 3).splitlines()
    assert table[-1].startswith("   3     1") and table[-1].endswith("2/3 seeds diverged")
    assert not any("diverged" in line for line in table[2:-1])


def test_registration_takes_the_cv_winners_first_seed_whatever_the_holdout_says(tmp_path, monkeypatch) -> None:
    """register_best registers ranked[0]'s first confirm seed: with the ranking by CV and the
    hold-out in the opposite order, the registered run is the CV winner's."""
    (tmp_path / "confirm").mkdir()
    ranked = sorted([_entry(1, 0.60, 0, holdout=0.9), _entry(2, 0.70, 0, holdout=0.5)], key=rank_key)
    for e in ranked:
        (tmp_path / "confirm" / f"encoder-trial{e['trial']:04d}-first-seed.pt").write_bytes(b"weights")
    registered = []
    monkeypatch.setattr(sweeps.confirm, "best_version", lambda tr, name: None)
    monkeypatch.setattr(sweeps.confirm.checkpoint, "load", lambda path: {"example": torch.zeros(2, 3)})
    monkeypatch.setattr(sweeps.confirm, "encoder_from_state",
                        lambda state, path: ({"data": {"image_size": 8}, "model": {"in_channels": 1}},
                                             torch.nn.Identity()))
    monkeypatch.setattr(sweeps.confirm, "register_encoder", lambda tr, run_id, *a: registered.append(run_id))
    ctx = SimpleNamespace(tracking=object(), spec=SimpleNamespace(name="demo"), out_dir=tmp_path)
    register_best(ctx, ranked)
    assert registered == ["run-2-0"]
    assert not list((tmp_path / "confirm").glob("encoder-*"))  # the kept encoder files are removed


def _simulated_entry(config: int, seeds: list[int], luck: dict, rng: np.random.Generator) -> dict:
    """A confirmed configuration of true kappa 0.6: each seed's luck (its encoder, a fixed
    function of (configuration, seed): a reused seed reuses it) moves its CV and hold-out alike."""
    lk = np.array([luck.setdefault((config, s), rng.normal(0, 0.05)) for s in seeds])
    cv, hold = 0.6 + lk + rng.normal(0, 0.02, len(lk)), 0.6 + lk + rng.normal(0, 0.04, len(lk))
    return {"trial": config, "diverged_seeds": 0, "metric": "kappa",
            "scores": {"vicreg": {"cv_kappa": cv.mean(), "holdout_kappa": hold.mean()}}}


def test_quote_seeds_remove_the_winners_curse() -> None:
    """Three tied configurations ranked by rank_key on their confirm seeds: the winner's
    hold-out on those same seeds reads high (+0.017 when written); on its quote seeds
    (confirm_seeds(quote=True)) it does not."""
    rng = np.random.default_rng(0)
    draws, same, fresh = 2000, [], []
    for _ in range(draws):
        luck: dict = {}
        ranked = sorted([_simulated_entry(c, confirm_seeds(0, 5), luck, rng) for c in range(3)], key=rank_key)
        same.append(ranked[0]["scores"]["vicreg"]["holdout_kappa"] - 0.6)
        quoted = _simulated_entry(ranked[0]["trial"], confirm_seeds(0, 5, quote=True), luck, rng)
        fresh.append(quoted["scores"]["vicreg"]["holdout_kappa"] - 0.6)
    se = 0.03 / np.sqrt(draws)  # the SD of one quote (luck/sqrt(5) and noise) over sqrt(draws)
    assert np.mean(same) > 0.01 and abs(np.mean(fresh)) < 4 * se, (np.mean(same), np.mean(fresh))


def test_study_report_leads_with_the_primary_verdict_and_closes_with_the_quote() -> None:
    best = _entry(3, 0.70, 0) | {"rank": 1}
    doc = {"study": "demo", "confirm_seeds": 3, "quote": "quote this", "confirmed": [best],
           "headline": {"trial": 3, "seed_values": [1000, 1001, 1002], "seeds": 3, "diverged_seeds": 0},
           "primary_verdict": "verdict: pretraining helped (above every baseline): vs random-init +0.370 kappa",
           "verdict": ["pretraining vs random-init on the hold-out: +0.370 kappa (95% CI +0.2..+0.5, 60 images "
                       "x 3 seeds): pretraining helped"],
           "cv_verdict": ["pretraining vs random-init on the selection folds (optimistic): +0.400 kappa"],
           "quote_score": "hold-out kappa 0.650 (95% CI 0.500..0.780, 60 images x 3 seeds)",
           "pretraining_saw": "pretraining saw the 96 CV images ... but not the hold-out's"}
    lines = verdict_lines(doc)
    assert lines[0] == doc["primary_verdict"] and "seeds 1000, 1001, 1002" in lines[1]
    assert "winner's curse" not in lines[1]  # one configuration: nothing was ranked
    assert lines[2].strip() == doc["verdict"][0] and lines[3].strip() == doc["cv_verdict"][0]
    assert lines[-1] == f"quote: {doc['quote_score']}, confirmed best (trial 3), with the verdict above"
    md = study_report(doc)
    assert md.startswith("## Study demo") and f"**{doc['primary_verdict']}**" in md
    assert md.index(doc["verdict"][0]) < md.index(doc["cv_verdict"][0]) < md.index("```")
    assert "quote this" in md
    ranked = [best, _entry(4, 0.6, 0) | {"rank": 2}]
    assert "(not the seeds that ranked it: no winner's curse)" in verdict_lines(doc | {"confirmed": ranked})[1]


def _fake_run(trial: int, seed: int, cv: float, rng: np.random.Generator) -> dict:
    """What confirm_run stores for one (configuration, seed): VICReg and one baseline, 3 folds
    and a hold-out of 60 images, without training."""
    from vicreg.evaluate import EvalReport, FoldResult

    y = rng.integers(0, 3, 60)

    def report(label: str, right: float, fold_kappa: float) -> dict:
        pred = np.where(rng.random(60) < right, y, (y + 1) % 3)
        folds = [FoldResult(k, {"kappa": fold_kappa, "f1": 0.5, "accuracy": 0.5, "auc": 0.5, "recall": [0.5] * 3,
                                "confusion": np.eye(3)}) for k in range(3)]
        return EvalReport(label, "linear", folds, holdout={"kappa": 0.5, "f1": 0.5, "accuracy": 0.5, "auc": 0.5,
                                                           "confusion": np.eye(3)},
                          holdout_probs=np.eye(3)[pred], holdout_labels=y, n_train_per_fold=80,
                          n_val_per_fold=40).to_dict()

    return {"trial": trial, "seed": seed, "status": "completed", "run_id": None, "metric": "kappa",
            "reports": [report("vicreg", 0.8, cv), report("random-init", 0.5, 0.3)], "pretrain_images": {}}


def test_several_configurations_are_ranked_on_their_seeds_and_the_winner_quoted_on_others(tmp_path,
                                                                                          monkeypatch) -> None:
    """run_confirm with top_k 2: both configurations run on seeds 1000-1002 and are ranked by
    CV; the winner alone runs on 1500-1502, and the headline (verdicts, primary, quote) comes
    from those seeds only. Stored runs are reused on a second call."""
    import json

    import optuna

    from sweeps.confirm import run_confirm

    study = optuna.create_study(direction="maximize")
    dist = {"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)}
    stored = {"config": {"train.seed": 0, "data.dataset": "synthetic"}}
    for value, lr in ((0.5, 1e-3), (0.4, 2e-3)):
        study.add_trial(optuna.trial.create_trial(params={"optim.lr": lr}, distributions=dist, value=value,
                                                  user_attrs=stored))
    calls = []
    rng = np.random.default_rng(0)

    def fake_confirm_run(ctx, trial, seed):  # trial 1's CV beats trial 0's, against the trials' order
        calls.append((trial.number, seed))
        out = _fake_run(trial.number, seed, 0.7 if trial.number == 1 else 0.6, rng)
        (ctx.out_dir / "confirm" / f"trial{trial.number:04d}-seed{seed}.json").write_text(json.dumps(out))
        return out

    monkeypatch.setattr(sweeps.confirm, "confirm_run", fake_confirm_run)
    monkeypatch.setattr(sweeps.confirm, "top_trials", lambda s, spec, k: sorted(
        s.get_trials(), key=lambda t: -t.value)[:k])
    ctx = SimpleNamespace(tracking=None, spec=SimpleNamespace(name="demo"), out_dir=tmp_path)
    ranked = run_confirm(study, ctx, top_k=2, seeds=3)
    assert [e["trial"] for e in ranked] == [1, 0]
    assert sorted(calls) == [(0, 1000), (0, 1001), (0, 1002), (1, 1000), (1, 1001), (1, 1002),
                             (1, 1500), (1, 1501), (1, 1502)]
    head = json.loads((tmp_path / "confirmed.json").read_text())["headline"]
    assert head["trial"] == 1 and head["seed_values"] == [1500, 1501, 1502]
    assert head["primary"]["line"].startswith("verdict: pretraining ") and "x 3 seeds" in head["quote"]["text"]
    assert [v["seeds"] for v in head["verdicts"]] == [3]
    calls.clear()
    run_confirm(study, ctx, top_k=2, seeds=3)
    assert calls == []  # every run stored: nothing runs again
