"""Data-parallel pretraining: one model on several processes (GPUs), as torchrun starts them.

`torchrun --nproc_per_node N -m vicreg pretrain ...` (or a sweep's `--gpus-per-trial N`) sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `setup` joins the group (NCCL on
GPUs, gloo on the CPU). The recipe is facebookresearch/vicreg's main_vicreg.py:
  - `data.batch_size` is the global batch; each rank takes its contiguous shard of every
    global batch (`shard`), so the learning-rate scaling (base_lr x batch / 256) and LARS
    follow the global batch whatever the number of processes;
  - the variance and covariance terms see the global batch (vicreg/loss.py gathers it);
  - BatchNorm is synchronised across ranks, as the reference converts it: each BN layer then
    normalises with the global batch's statistics, so N processes compute what one process
    computes on the concatenated batch (tests/vicreg/test_distributed.py). torch's
    SyncBatchNorm runs on GPUs only; on the CPU (gloo) `GlobalBatchNorm` computes the same
    statistics with autograd-aware all-reduces (torch.distributed.nn.functional);
  - DistributedDataParallel averages the gradients.
Only rank 0 writes checkpoints and prints; every rank reads the checkpoint it resumes from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .config import ConfigError
from .errors import RankLost


@dataclass(frozen=True)
class World:
    """This process's place in the group; World() is the single process."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def from_env() -> World:
    """The group torchrun (or the sweep's launcher) described in the environment; World() without one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device, timeout_s: float = 1800.0) -> tuple[World, torch.device]:
    """Join the group of the environment (once per process) -> (world, this rank's device). On
    CUDA each rank takes GPU LOCAL_RANK of those it sees; train.device "cuda:K" with several
    processes is refused, since every rank would take GPU K."""
    world = from_env()
    if not world.active:
        return world, device
    if device.type == "cuda":
        if device.index is not None:
            raise ConfigError(f"train.device={device} names one GPU, but {world.size} processes share this "
                              "training: use train.device=cuda (or auto); each rank takes GPU LOCAL_RANK")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    return world, device


def check_config(batch_size: int, drop_last: bool, world: World) -> None:
    """Fail before any work if the global batch cannot be split evenly over the ranks."""
    if not world.active:
        return
    if batch_size % world.size:
        raise ConfigError(f"data.batch_size={batch_size} (the global batch) does not split over {world.size} "
                          f"processes: use a multiple of {world.size}")
    if not drop_last:
        raise ConfigError(f"train.drop_last=false keeps a partial last batch, which cannot be split evenly over "
                          f"{world.size} processes: set train.drop_last=true")


def shard(perm: torch.Tensor, batch_size: int, steps: int, world: World) -> torch.Tensor:
    """An epoch's order of image indices `perm` (N,), read as `steps` global batches of
    `batch_size` -> this rank's part (steps * batch_size / world.size,): of each global batch
    the rank-th contiguous slice, so that rank r's i-th local batch is global batch i's r-th part."""
    if not world.active:
        return perm
    local = batch_size // world.size
    batches = perm[:steps * batch_size].view(steps, batch_size)
    return batches[:, world.rank * local:(world.rank + 1) * local].reshape(-1)


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's `obj` on every rank (pickled over the default group; small objects only)."""
    if not world.active:
        return obj
    box = [obj]
    try:
        dist.broadcast_object_list(box, src=0)
    except (RuntimeError, ValueError) as e:  # gloo and NCCL report a dead peer as RuntimeError
        raise RankLost(f"rank {world.rank}: a process of this training's group is gone ({e})") from e
    return box[0]


def mean_over_ranks(t: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of `t` over ranks (every rank gets it), for the per-epoch metrics."""
    if not world.active:
        return t
    t = t.clone()
    try:
        dist.all_reduce(t)
    except (RuntimeError, ValueError) as e:
        raise RankLost(f"rank {world.rank}: a process of this training's group is gone ({e})") from e
    return t / world.size


def min_over_ranks(t: torch.Tensor, world: World) -> torch.Tensor:
    if not world.active:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm over the global batch with collectives every backend has (gloo on the CPU).

    The statistics of torch's SyncBatchNorm (biased variance to normalise, unbiased for the
    running variance; Ioffe & Szegedy 2015, eq. in Algorithm 1), computed as two all-reduces
    of per-channel sums, mean first, then the squared deviations (no E[x^2] - E[x]^2
    cancellation). The all-reduces are torch.distributed.nn.functional's, whose backward
    all-reduces the gradient, so the gradients are those of BatchNorm on the concatenated batch.
    Input (B, C) or (B, C, *spatial): it stands in for BatchNorm1d and 2d alike (the same
    parameters and buffers). Outside training, or in one process, plain BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                self.training or self.running_mean is None, self.momentum or 0.0, self.eps)
        import warnings

        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor(x.numel() // x.shape[1], dtype=x.dtype, device=x.device)
        with warnings.catch_warnings():
            # torch marks this public, autograd-aware all_reduce deprecated in favour of a private
            # module (_functional_collectives); the public one stays until it is removed.
            warnings.simplefilter("ignore", FutureWarning)
            total = all_reduce(torch.cat([x.sum(dims), count.view(1)]))
            n = total[-1]
            mean = total[:-1] / n
            centred = x - mean.view(shape)
            var = all_reduce(centred.pow(2).sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of `model` synchronised across ranks, in place: torch's SyncBatchNorm on
    CUDA, GlobalBatchNorm elsewhere. The parameters and buffers keep their names, so the state
    dict loads into a plain model (which is what `pretrain` returns)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)) and not isinstance(child, GlobalBatchNorm):
            bn = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats, device=device)
            bn.load_state_dict(child.state_dict())
            bn.train(child.training)
            setattr(model, name, bn)
        else:
            sync_batchnorm(child, device)
    return model
