"""One trial on several GPUs (--gpus-per-trial N): a worker is a group of N processes.

Rank 0 is the worker as with one GPU: it claims trials, asks Optuna, owns the trial's MLflow
run, reports to the pruner, evaluates, and tells. The other ranks only train: for each trial
rank 0 sends them its resolved config (`share`), all N run vicreg.train.pretrain together
(DistributedDataParallel, vicreg/distributed.py), and rank 0's callbacks (the probe pruner, the
epoch logger, SIGTERM) decide for all of them, once per epoch, inside pretrain.

Why not optuna-integration's TorchDistributedTrial: every one of its methods is a collective
that every rank must call in the same order (set_user_attr and report too, each followed by a
broadcast of the trial's properties). Our objective touches the trial in a dozen places that
only rank 0 should reach (the MLflow run, the retry bookkeeping, the constraints), so each
rank would have to replay rank 0's exact sequence or the group hangs. Here suggest, report and
should_prune go to Optuna from rank 0 alone, as TorchDistributedTrial makes them, with one
message per trial and one per epoch.

Messages go over a gloo group of their own, whose long timeout lets the other ranks wait while
rank 0 evaluates, or waits for the study's last trials: the training's own group (NCCL on GPUs)
keeps the default timeout, so that a dead rank ends a trial in minutes, not hours.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vicreg.config import Config

    from .context import SweepContext

WAIT = timedelta(days=7)  # how long the other ranks wait for rank 0's next message


def group_env(rank: int, size: int, port: int) -> dict[str, str]:
    """The environment torchrun would give rank `rank` of a `size`-process group on this machine."""
    return {"RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(size),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TrialGroup:
    """This process's place in its worker's group, and the group's message channel."""

    world: Any  # vicreg.distributed.World
    channel: Any  # a gloo ProcessGroup

    def share(self, cfg: Config) -> None:
        """Rank 0: the other ranks start pretraining `cfg` (call right before pretrain)."""
        from vicreg.config import to_dict

        self._send(("trial", to_dict(cfg)))

    def close(self, code: int) -> None:
        """Rank 0: the other ranks exit with `code` (quietly, if they are already gone)."""
        try:
            self._send(("stop", code))
        except Exception as e:  # the group is broken (a rank died): they end on their own
            print(f"worker group: could not tell the other ranks to stop ({type(e).__name__})", file=sys.stderr)

    def _send(self, msg: tuple) -> None:
        import torch.distributed as dist

        dist.broadcast_object_list([msg], src=0, group=self.channel)

    def receive(self) -> tuple:
        import torch.distributed as dist

        box: list = [None]
        dist.broadcast_object_list(box, src=0, group=self.channel)
        return box[0]


def join(device_name: str) -> TrialGroup | None:
    """Join the group the launcher (or torchrun) described in the environment; None in a
    one-process worker. `device_name`: the study's train.device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    import torch.distributed as dist

    from vicreg.distributed import setup
    from vicreg.train import resolve_device

    world, _ = setup(resolve_device(device_name))
    return TrialGroup(world, dist.new_group(backend="gloo", timeout=WAIT))


def follow(ctx: SweepContext, group: TrialGroup) -> int:
    """A rank other than 0: pretrain each trial rank 0 shares, until it says stop -> its exit code.

    Ctrl-C and SIGTERM end this process at once (rank 0 records the trial; the launcher and
    schedulers signal every rank). Anything that goes wrong here also ends it: rank 0's next
    collective then fails, and it records the trial as failed for a lost rank (sweeps/outcome.py)."""
    from vicreg.config import config_from_dict
    from vicreg.data import pretrain_selection
    from vicreg.train import pretrain

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        kind, body = group.receive()
        if kind == "stop":
            return int(body)
        cfg = config_from_dict(body)
        data, folds = ctx.datasets(cfg), ctx.folds(cfg)  # rank 0 wrote the folds file before sharing
        images, _ = pretrain_selection(data, folds, cfg.data)
        pretrain(cfg, images)
