"""The confirm stage's rules, without training: fresh seeds, divergence in the ranking and
the table, and the study report that becomes the parent run's description."""

from __future__ import annotations

from sweeps.best import confirmed_table, study_report, verdict_lines
from sweeps.confirm import confirm_seeds, rank_key


def test_confirm_seeds_never_equal_the_trial_seed() -> None:
    assert confirm_seeds(0, 3) == [1000, 1001, 1002]
    for trial_seed in (0, 5, 999, 1000, 1001, 2500):
        seeds = confirm_seeds(trial_seed, 5)
        assert trial_seed not in seeds and len(set(seeds)) == 5


def _entry(trial: int, cv: float, diverged: int, seeds: int = 3) -> dict:
    vic = {"cv_kappa": cv, "cv_kappa_std": 0.01, "pooled_kappa": cv, "holdout_kappa": cv - 0.05,
           "holdout_kappa_std": 0.02}
    return {"trial": trial, "seeds": seeds, "seed_values": [1000 + i for i in range(seeds)],
            "diverged_seeds": diverged, "scores": {"vicreg": vic,
                                                  "random-init": {"cv_kappa": 0.3, "holdout_kappa": 0.28}},
            "verdicts": [], "cv_verdicts": []}


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


def test_study_report_leads_with_the_holdout_verdict() -> None:
    best = _entry(3, 0.70, 0) | {"rank": 1}
    doc = {"study": "demo", "confirm_seeds": 3, "quote": "quote this",
           "confirmed": [best],
           "verdict": ["pretraining vs random-init on the hold-out: +0.370 kappa (95% CI +0.2..+0.5, 60 images "
                       "x 3 seeds): pretraining helped"],
           "cv_verdict": ["pretraining vs random-init on the selection folds (optimistic): +0.400 kappa"],
           "pretraining_saw": "pretraining saw the 96 CV images ... but not the hold-out's"}
    lines = verdict_lines(doc)
    assert "confirm seeds 1000, 1001, 1002" in lines[0]
    assert lines[1].strip() == doc["verdict"][0] and lines[2].strip() == doc["cv_verdict"][0]
    assert lines[-1].startswith("quote: hold-out kappa 0.6500 +- 0.0200") and "over 3 seeds" in lines[-1]
    md = study_report(doc)
    assert md.startswith("## Study demo") and f"- {doc['verdict'][0]}" in md
    assert md.index(doc["verdict"][0]) < md.index(doc["cv_verdict"][0]) < md.index("```")
    assert "quote this" in md
