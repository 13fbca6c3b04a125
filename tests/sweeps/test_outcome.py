"""How a trial ends, row by row: sweeps/outcome.py's table against an expected table written
out here, `tracked` turning each ending into the MLflow status the table says, docs/sweeps.md
holding the table, and best.record_best, which the table's outcomes feed."""

from __future__ import annotations

import optuna
import pytest
import torch
import yaml

from sweeps.outcome import (
    OUTCOMES,
    Diverged,
    OutOfMemory,
    SweepStopped,
    markdown_table,
    outcome_of,
    typed,
)
from sweeps.signals import PREEMPT, Preempted
from sweeps.tracking import Run, tracked
from tests.helpers import REPO
from vicreg.errors import RankLost

# what happened -> (Optuna state, MLflow status, state tag, retry, counts as a failure, exit code)
EXPECTED = [
    (None, {}, "completed", ("COMPLETE", "FINISHED", "COMPLETE", "no", False, None)),
    (optuna.TrialPruned("pruned at epoch 2"), {}, "pruned", ("PRUNED", "KILLED", "PRUNED", "no", False, None)),
    (Diverged("loss is nan at step 3"), {}, "diverged (trial)", ("PRUNED", "KILLED", "PRUNED", "no", False, None)),
    (Diverged("loss is nan"), {"confirm": True}, "diverged (confirm run)",
     ("-", "FAILED", "DIVERGED", "no", False, None)),
    (OutOfMemory("CUDA out of memory"), {"packed": True}, "out of memory, packed (--per-gpu > 1)",
     ("FAIL", "FAILED", "FAILED", "alone, once", False, None)),
    (OutOfMemory("CUDA out of memory"), {}, "out of memory", ("FAIL", "FAILED", "FAILED", "no", True, None)),
    (ValueError("boom"), {}, "another exception", ("FAIL", "FAILED", "FAILED", "no", True, None)),
    (SweepStopped("3 in a row"), {}, "max_consecutive_failures in a row", ("FAIL", "FAILED", "FAILED", "no", True, 1)),
    (KeyboardInterrupt(), {}, "Ctrl-C", ("FAIL", "KILLED", "INTERRUPTED", "re-enqueued", False, 130)),
    (Preempted("terminated (SIGTERM)"), {}, "SIGTERM", ("FAIL", "KILLED", "PREEMPTED", "re-enqueued", False, 143)),
    (Preempted("time limit (--max-time)", time_limit=True), {}, "--max-time",
     ("FAIL", "KILLED", "PREEMPTED", "re-enqueued", False, 0)),
    (RankLost("a process of this training's group is gone"), {}, "a rank of its group died (--gpus-per-trial)",
     ("FAIL", "FAILED", "RANK_LOST", "re-enqueued", False, 1)),
]


@pytest.mark.parametrize("event, where, row, expected", EXPECTED, ids=[r[2] for r in EXPECTED])
def test_every_row_of_the_table(event, where, row: str, expected: tuple) -> None:
    o = outcome_of(event, **where)
    assert o.event == row
    assert (o.optuna_state, o.mlflow_status, o.state_tag, o.retry, o.counts_as_failure, o.exit_code) == expected


def test_the_table_has_no_row_without_an_event() -> None:
    assert {r[2] for r in EXPECTED} == set(OUTCOMES)


def test_a_rank_lost_to_the_same_sigterm_is_the_preemption(monkeypatch) -> None:
    # The scheduler signals every rank: rank 0 may see its peer's death before its own SIGTERM.
    monkeypatch.setitem(PREEMPT, "reason", "terminated (SIGTERM)")
    assert outcome_of(RankLost("gone")).event == "SIGTERM"


def test_torch_out_of_memory_is_typed_and_other_errors_are_not() -> None:
    oom = typed(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "at batch 64")
    assert isinstance(oom, OutOfMemory) and str(oom) == "at batch 64"
    other = RuntimeError("x")
    assert typed(other, "reason") is other


class _RecordingRun(Run):
    """A Run that records how it was ended instead of calling MLflow."""

    def __init__(self) -> None:
        super().__init__(None)
        self.ends: list[tuple] = []

    def end(self, status: str, state: str, tags: dict | None = None) -> None:
        self.ends.append((status, state, tags or {}))
        self.ended = True


@pytest.mark.parametrize("event, where, row, expected", [r for r in EXPECTED if not r[1]],
                         ids=[r[2] for r in EXPECTED if not r[1]])
def test_tracked_ends_each_run_as_the_table_says(event, where, row: str, expected: tuple) -> None:
    run = _RecordingRun()
    if event is None:
        with tracked(run):
            pass
    else:
        with pytest.raises(type(event)), tracked(run, describe=lambda e: f"why: {e}"):
            raise event
    ((status, state, tags),) = run.ends
    assert (status, state) == expected[1:3]
    if isinstance(event, Preempted):
        assert tags["reason"] == f"{event.reason}; resumes from its checkpoint on the next start"
    elif isinstance(event, KeyboardInterrupt):
        assert tags["reason"] == "interrupted (Ctrl-C)"
    elif isinstance(event, optuna.TrialPruned):
        assert tags["reason"] == str(event)
    elif event is not None:
        assert tags["reason"] == f"why: {event}"


def test_the_sweeps_page_holds_the_table() -> None:
    page = (REPO / "docs" / "sweeps.md").read_text()
    assert markdown_table() in page, "docs/sweeps.md's fault table differs from sweeps/outcome.py: paste it"


def test_record_best_writes_the_top_trials_in_order(tmp_path, synthetic_root) -> None:
    from sweeps.best import record_best
    from sweeps.cli import load_spec
    from tests.helpers import write_study

    spec = load_spec(write_study(tmp_path, synthetic_root, best_file_trials=2), False)
    study = optuna.create_study(direction="maximize")
    for value in (0.2, 0.5, 0.4):
        t = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
        t.set_user_attr("scores", {"kappa_mean": value, "kappa_std": 0.1})
        t.set_user_attr("config", {"optim.lr": t.params["optim.lr"], "data.image_size": 16})
        study.tell(t, value)
    record_best(study, spec, None, None)
    doc = yaml.safe_load((tmp_path / "best" / "tiny.yaml").read_text())
    assert [(e["rank"], e["trial"], e["value"]) for e in doc["top"]] == [(1, 1, 0.5), (2, 2, 0.4)]
    assert doc["top"][0]["kappa"] == "0.5000 +- 0.1000" and doc["confirmed"] == [] and doc["verdict"] == []
    best_config = yaml.safe_load((tmp_path / "best" / "tiny.best-config.yaml").read_text())
    assert best_config == {"optim": {"lr": study.trials[1].params["optim.lr"]}, "data": {"image_size": 16}}
