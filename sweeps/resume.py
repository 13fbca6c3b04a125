"""Resuming a retried trial: each trial checkpoints every `checkpoint_every` epochs into its
own folder, and a trial that retries a failed one (Ctrl-C, SIGTERM, --max-time, a dead
worker) starts from that checkpoint, reports the stored probe values to the pruner again and
continues the failed trial's MLflow run."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from vicreg.config import Config

if TYPE_CHECKING:
    from .context import SweepContext


@dataclass
class Resume:
    """Where a retried trial picks up: the trial it retries, its checkpoint folder, the
    checkpoint (None: none usable, so it starts over) and its MLflow run (continued)."""

    from_trial: int
    checkpoint_dir: Path
    state: dict | None
    run_id: str | None

    def continues(self) -> tuple[str, int, int] | None:
        """(the failed trial's MLflow run id, its trial number, epochs done): the run a retry
        continues; None when it had no run (tracking was off)."""
        return None if self.run_id is None else (self.run_id, self.from_trial, len(self.state["history"]))

    def report_history(self, trial: optuna.Trial) -> int:
        """Report the stored probe values to Optuna again, so that the pruner sees the same
        history; returns the number of epochs the checkpoint holds."""
        history = self.state["history"]
        for h in history:
            for key in ("probe_kappa", "probe_f1"):  # the probe's primary score, as the epoch logged it
                if key in h:
                    trial.report(h[key], h["epoch"])
                    trial.set_user_attr(key, h[key])
        trial.set_user_attr("resumed_from_trial", self.from_trial)
        trial.set_user_attr("resumed_at_epoch", len(history) + 1)  # the epoch it starts at
        print(f"trial {trial.number}: resumes trial {self.from_trial} at epoch {len(history) + 1} from "
              f"{self.checkpoint_dir}", flush=True)
        return len(history)


def trial_folder(ctx: SweepContext, number: int) -> Path:
    """out/checkpoints/trialNNNN: a trial's checkpoint folder, derived from the out folder and
    the trial number alone. Never read from the storage: whoever can write there must not
    choose a folder this worker writes or deletes."""
    return ctx.out_dir / "checkpoints" / f"trial{number:04d}"


def _retried(attrs: dict, system: dict, number: int) -> int | None:
    """The earlier trial that trial `number` retries (ours: user attr retry_of; Optuna's
    heartbeat retry: system attr failed_trial), or None: a stored value that is not the number
    of an earlier trial is ignored."""
    previous = attrs.get("retry_of", system.get("failed_trial"))
    if previous is None or isinstance(previous, bool):
        return None
    try:
        previous = int(previous)
    except (TypeError, ValueError):
        return None
    return previous if 0 <= previous < number else None


def checkpoint_dir(ctx: SweepContext, trial: optuna.Trial) -> tuple[Path, Resume | None]:
    """The trial's checkpoint folder, and how it resumes if it retries a failed trial. A retry
    uses the folder of the first trial of its chain of retries (a retry of a retry goes on where
    both checkpointed), trial_folder of that number, which must be reachable here (a shared
    --out across machines). Each stored number must be an earlier trial's: else the trial
    starts afresh in its own folder."""
    trials = trial.study.get_trials(deepcopy=False)  # numbers are list positions
    previous = _retried(trial.user_attrs, trials[trial.number].system_attrs, trial.number)
    if previous is None:
        return trial_folder(ctx, trial.number), None
    first = previous
    while (earlier := _retried(trials[first].user_attrs, trials[first].system_attrs, first)) is not None:
        first = earlier  # numbers fall at every step: the loop ends
    folder = trial_folder(ctx, first)
    return folder, Resume(previous, folder, None, trials[previous].user_attrs.get("mlflow_run_id"))


def trial_checkpoints(trial: optuna.Trial, ctx: SweepContext, cfg: Config) -> tuple[Config, Resume | None]:
    """The config pretrain gets (checkpointing into the trial's folder every `checkpoint_every`
    epochs) and the resume point when the trial retries a failed one whose checkpoint is
    usable here (else None, with one line saying why)."""
    from vicreg.train import resume_state

    ckpt, resume = checkpoint_dir(ctx, trial)
    trial.set_user_attr("checkpoint_dir", str(ckpt))
    run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, checkpoint_dir=str(ckpt), checkpoint_every=ctx.spec.checkpoint_every))
    if resume is not None:
        resume.state = resume_state(run_cfg)
        if resume.state is None:
            print(f"trial {trial.number}: retries trial {resume.from_trial}, but no usable checkpoint is at "
                  f"{ckpt} (with a machine-local --out another machine's checkpoints are not here); "
                  f"starting over", flush=True)
            shutil.rmtree(ckpt, ignore_errors=True)  # a damaged or foreign one must not block pretrain
            resume = None
    return run_cfg, resume

