"""VICReg pretraining: `pretrain(cfg, images, callbacks) -> PretrainResult`.

One loop, read top to bottom. The dataset is uint8 (N, C, H, W) already at the run's image
size: a tensor, or `Rows` of the memory-mapped cache (vicreg/data/rows.py). It is moved to the
training device once when it fits (data.on_device), else streamed a batch ahead; each step
takes a batch of indices and makes both views on the device (see augment.py). Per-step values are
accumulated on the device and read back once per epoch, so the step loop has no host
sync (the only exception is the optional every-N-steps report, which must read values).
Weights and views are channels_last on every device; bf16 autocast on CUDA (and on the CPU
with train.precision bf16), torch.compile on CUDA only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import checkpoint, distributed
from .augment import TwoViews, channel_stats
from .config import Config, ConfigError, LossConfig, to_dict
from .data.rows import Rows, epoch_batches, placement
from .distributed import World
from .errors import RankLost, first_line
from .imagenet import resolve_init
from .loss import VICRegTerms, vicreg_loss
from .model import VICRegModel, build_model
from .optim import build_optimizer, lr_at, peak_lr, set_lr, warmup_steps

CHECKPOINT_NAME = "last.pt"
METRIC_NAMES = ("loss", "invariance", "variance", "covariance", "std")


@dataclass
class Report:
    """What a callback sees: `kind` is "epoch" (or "step" when train.log_every_steps > 0)."""

    kind: str
    epoch: int  # 0-based epoch
    step: int  # optimizer steps done so far
    metrics: dict[str, float]
    model: VICRegModel


# A callback returns None/False to go on, or True / a reason string to stop training: after the
# epoch (an epoch report), or at once with the epoch cut short and not recorded (a step report).
Callback = Callable[[Report], "bool | str | None"]


@dataclass
class PretrainResult:
    model: VICRegModel
    status: str  # completed | early_stopped | diverged | stopped
    reason: str
    epochs: int  # epochs completed (with finite loss)
    steps: int
    best_loss: float
    history: list[dict[str, float]] = field(default_factory=list)
    diverged_step: int | None = None
    checkpoint: Path | None = None
    device: str = "cpu"
    placement: str = ""  # "device" or "stream": where the batches came from (vicreg/data/rows.py)
    placement_reason: str = ""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available on this machine")
    return dev


def check_images(cfg: Config, images: torch.Tensor | Rows) -> None:
    """Fail before any work if the tensor cannot be what this config trains on (images at
    data.crop_source_size when set: the views are cropped from them)."""
    size = cfg.data.crop_source_size or cfg.data.image_size
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"pretrain expects uint8 images (N, C, H, W), got {images.dtype} "
                         f"{tuple(images.shape)}")
    n, c, h, w = images.shape
    if c != cfg.model.in_channels or (h, w) != (size, size):
        key = "data.crop_source_size" if cfg.data.crop_source_size else "data.image_size"
        raise ValueError(f"images are {tuple(images.shape[1:])} but the config says "
                         f"model.in_channels={cfg.model.in_channels}, {key}={size}")
    if n < cfg.data.batch_size:
        raise ValueError(f"{n} images are fewer than data.batch_size={cfg.data.batch_size}")


def _training_key(cfg: Config) -> dict[str, Any]:
    """The parts of the config a checkpoint must agree with to be resumed."""
    d = to_dict(cfg)
    data = {k: d["data"][k] for k in ("dataset", "root", "test_root", "image_size", "crop_source_size", "batch_size",
                                      "include_test_in_pretrain", "holdout", "holdout_in_pretrain",
                                      "fold_seed", "shuffle_labels", "skip_bad_images")}
    train = {k: d["train"][k] for k in ("epochs", "patience", "min_delta", "seed", "drop_last", "precision")}
    return {"model": d["model"], "augment": d["augment"], "loss": d["loss"], "optim": d["optim"],
            "data": data, "train": train}


def resume_state(cfg: Config) -> dict[str, Any] | None:
    """The checkpoint `pretrain(cfg, ...)` would resume from (its epoch, history, ...), or None:
    no train.checkpoint_dir, no checkpoint, an unreadable one (moved aside), or one written
    with another config (left alone; pretrain would refuse it)."""
    if not cfg.train.checkpoint_dir:
        return None
    state = checkpoint.read_checkpoint(Path(cfg.train.checkpoint_dir) / CHECKPOINT_NAME)
    if state is None or state["key"] != _training_key(resolve_init(cfg)):
        return None
    return state


Forward = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def train_step(forward: Forward, opt: torch.optim.Optimizer, view_a: torch.Tensor,
               view_b: torch.Tensor, loss: LossConfig, autocast: AbstractContextManager | None = None,
               ) -> tuple[VICRegTerms, torch.Tensor]:
    """One VICReg step on two views (B, C, H, W) of the same images: both through `forward`
    (encoder + expander: a VICRegModel, or it wrapped by DistributedDataParallel or
    torch.compile, called once with both views) in channels_last under `autocast`, the loss in
    fp32 (vicreg_loss), backward and the optimiser's update. -> (the loss terms, z_a (B, D): the
    first view's embeddings). No host sync. `pretrain` and the benchmarks (throughput, learning
    --timing) call this, so that they time the step that trains."""
    view_a = view_a.contiguous(memory_format=torch.channels_last)
    view_b = view_b.contiguous(memory_format=torch.channels_last)
    with autocast or nullcontext():
        z_a, z_b = forward(view_a, view_b)
    terms = vicreg_loss(z_a, z_b, loss.sim_coeff, loss.std_coeff, loss.cov_coeff)
    opt.zero_grad(set_to_none=True)
    terms.loss.backward()
    opt.step()
    return terms, z_a


def autocast_for(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast on CUDA (train.precision auto) or when asked (bf16); else nothing."""
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def data_placement(cfg: Config, images: torch.Tensor | Rows, workers_per_device: int = 1):
    """Where `pretrain` keeps `images`: on the device, or streamed (vicreg.data.rows.placement)."""
    return placement(cfg.data.on_device, images.shape[0] * math.prod(images.shape[1:]),
                     resolve_device(cfg.train.device), cfg.data.device_budget_mb, workers_per_device)


def _restore(state: dict[str, Any], cfg: Config, path: Path, model: VICRegModel, opt: torch.optim.Optimizer,
             world: World) -> tuple[int, int, float, int, list[dict[str, float]]]:
    """Load a checkpoint written with this config into `model` and `opt` -> (the epoch to start
    at, steps done, best loss, epochs without improvement, history); another config's is refused,
    and so is another number of processes (each rank's augmentations are drawn from its own seed,
    so a resumed run would not continue the same training)."""
    if state["key"] != _training_key(cfg):
        diff = [k for k in state["key"] if state["key"][k] != _training_key(cfg).get(k)]
        raise ConfigError(f"{path} was written with a different config ({', '.join(diff)}); "
                          "use another train.checkpoint_dir, or delete it (make clean) to start over")
    written = state.get("world_size", 1)
    if written != world.size:
        raise ConfigError(f"{path} was written by a {written}-process training and this one has {world.size}: "
                          f"resume it with {written} (torchrun --nproc_per_node {written}, or --gpus-per-trial "
                          f"{written}), or use another train.checkpoint_dir")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return state["epoch"] + 1, state["step"], state["best"], state["wait"], state["history"]


def _asked_to_stop(callbacks: Sequence[Callback], report: Report) -> str | None:
    """Every callback sees the report; the first that asks to stop gives the reason (True: a
    generic one). All are called, so that each logs the epoch even when an earlier one stops."""
    answers = [cb(report) for cb in callbacks]
    return next((a if isinstance(a, str) else "stopped by a callback" for a in answers if a), None)


def _decide(callbacks: Sequence[Callback], report: Report, world: World) -> str | None:
    """`_asked_to_stop` on rank 0, its answer on every rank (the callbacks run on rank 0 only).
    A callback's exception (Ctrl-C, SIGTERM, a tracking error) stops the other ranks' training
    too, then is raised on rank 0, so that no rank waits in a collective for one that left."""
    if not world.active:
        return _asked_to_stop(callbacks, report)
    error, stop = None, None
    if world.main:
        try:
            stop = _asked_to_stop(callbacks, report)
        except BaseException as e:  # noqa: BLE001 - raised again below, after the others are told
            error, stop = e, f"rank 0 stopped: {type(e).__name__}"
    stop = distributed.broadcast(stop, world)
    if error is not None:
        raise error
    return stop


def _epoch_order(seed: int, epoch: int, n: int, batch_size: int, steps: int, world: World) -> torch.Tensor:
    """This rank's image indices for the epoch, and the random state its views are drawn from.
    Reseeding per epoch makes a resumed run draw the same batches and views; the order is the
    same on every rank (each takes its shard), the augmentations each rank's own."""
    torch.manual_seed(seed * 1_000_003 + epoch)
    perm = distributed.shard(torch.randperm(n), batch_size, steps, world)
    if world.active:
        torch.manual_seed((seed * 1_000_003 + epoch) * 1_009 + world.rank + 1)
    return perm


def _wrapped(model: VICRegModel, device: torch.device, world: World, compile_: bool) -> Forward:
    """The two-view forward the step calls: the model, in DistributedDataParallel across ranks
    (gradients averaged), compiled on CUDA when train.compile is set."""
    forward: Any = model
    if world.active:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(forward) if compile_ else forward


def _read_checkpoint(path: Path | None, device: torch.device, world: World) -> dict[str, Any] | None:
    """The checkpoint to resume from, on every rank: rank 0 reads first (an unreadable file is
    moved aside once, vicreg/checkpoint.py), then the others read it, if rank 0 found one."""
    if path is None:
        return None
    state = checkpoint.read_checkpoint(path, device) if world.main else None
    if distributed.broadcast(state is not None, world) and not world.main:
        state = checkpoint.read_checkpoint(path, device)
    return state


def _first_bad_step(first_bad: torch.Tensor, world: World) -> int:
    """The first step with a non-finite loss on any rank (-1: none); one host sync, per epoch."""
    never = torch.iinfo(torch.long).max
    step = int(distributed.min_over_ranks(torch.where(first_bad < 0, torch.full_like(first_bad, never), first_bad),
                                          world))
    return -1 if step == never else step


def _plain(model: VICRegModel, cfg: Config, device: torch.device, world: World) -> VICRegModel:
    """What training returns: in one process the model itself; after data-parallel training a
    plain copy (BatchNorm again, usable outside the group: evaluation runs on one process)."""
    if not world.active:
        return model
    plain = build_model(cfg.model, cfg.data.image_size).to(device, memory_format=torch.channels_last)
    plain.load_state_dict(model.state_dict())
    return plain


def _on_device(images: torch.Tensor | Rows, device: torch.device) -> torch.Tensor:
    """The whole selection on the training device (a chunk at a time from the cache's Rows)."""
    return images.materialise(device) if isinstance(images, Rows) else images.to(device, non_blocking=True)


def _epoch_line(epoch: int, epochs: int, m: dict[str, float]) -> str:
    return (f"epoch {epoch + 1:3d}/{epochs}  loss {m['loss']:.4f}  inv {m['invariance']:.4f}  "
            f"var {m['variance']:.4f}  cov {m['covariance']:.4f}  lr {m['lr']:.2e}  std {m['std']:.3f}  "
            f"{m['images_per_s']:.1f} img/s")


def pretrain(cfg: Config, images: torch.Tensor | Rows, callbacks: Sequence[Callback] = (),
             workers_per_device: int = 1) -> PretrainResult:
    """Pretrain encoder + expander with VICReg on uint8 `images` (N, C, size, size): a tensor,
    or Rows of the decode cache. `workers_per_device`: trials sharing this GPU (--per-gpu),
    for data.on_device=auto's budget.

    Stops after `train.epochs`, when the epoch loss has not improved by `min_delta`
    for `patience` epochs, when the loss becomes non-finite (status "diverged", not an
    exception, so a sweep goes on), or when a callback asks. With
    `train.checkpoint_dir` set, a checkpoint is written atomically after every epoch
    and an existing one is resumed from (bit-identical on CPU with the same seed).

    Under torchrun (WORLD_SIZE > 1) every process calls this with the same arguments and trains
    one model data-parallel (vicreg/distributed.py): each rank takes its shard of each global
    batch of data.batch_size; the callbacks run on rank 0, whose decisions every rank follows;
    only rank 0 prints and writes checkpoints. Every rank returns the same trained model.
    """
    try:
        return _train(cfg, images, callbacks, workers_per_device)
    except RuntimeError as e:
        if _lost_rank(e):
            raise RankLost(f"a process of this training's group is gone ({first_line(e)})") from e
        raise


def _lost_rank(e: RuntimeError) -> bool:
    """A collective's failure: torch's DistError, or gloo's transport errors (a plain RuntimeError
    naming gloo: "Connection closed by peer" when another rank died)."""
    import torch.distributed as dist

    if isinstance(e, dist.DistError):
        return True
    in_group = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return in_group and any(k in str(e) for k in ("gloo", "NCCL", "Connection closed by peer"))


def _train(cfg: Config, images: torch.Tensor | Rows, callbacks: Sequence[Callback],
           workers_per_device: int) -> PretrainResult:
    """pretrain's body (its docstring says what it does)."""
    # The ImageNet file (if any), the stem and a folder/csv set's channels, pinned for the
    # checkpoint; then the images checked against them, before any work.
    cfg = resolve_init(cfg)
    check_images(cfg, images)
    tc, dc = cfg.train, cfg.data
    world, device = distributed.setup(resolve_device(tc.device))
    distributed.check_config(dc.batch_size, tc.drop_last, world)
    cuda = device.type == "cuda"
    show = tc.progress and world.main

    # --- setup: model, views, optimiser, schedule -------------------------------------
    torch.manual_seed(tc.seed)
    # channels_last suits cuDNN and oneDNN alike (measured ~19% faster on our 2-core CPU too).
    model = build_model(cfg.model, dc.image_size).to(device, memory_format=torch.channels_last)
    # BatchNorm over the global batch, as the reference (before the optimiser takes the parameters).
    model = distributed.sync_batchnorm(model, device) if world.active else model
    opt = build_optimizer(model, cfg.optim)
    mean, std = channel_stats(images)
    views = TwoViews(cfg.augment, dc.image_size, cfg.model.in_channels, mean, std).to(device)
    where = data_placement(cfg, images, workers_per_device)
    if show:
        tqdm.write(f"data: {'on the device' if where.on_device else 'streamed'} ({where.reason})"
                   + (f"; {world.size} processes, {dc.batch_size // world.size} images each per step" if world.active
                      else ""))
    images = _on_device(images, device) if where.on_device else images  # once; batches are indexed there
    n, bs = images.shape[0], dc.batch_size
    # By default the last partial batch is dropped (VICReg's statistics are over the batch);
    # kept with train.drop_last false, unless it is a single image (no variance to take).
    steps_per_epoch = n // bs if tc.drop_last or n % bs < 2 else n // bs + 1
    total_steps = tc.epochs * steps_per_epoch
    warmup = warmup_steps(cfg.optim, tc.epochs, steps_per_epoch)
    peak = peak_lr(cfg.optim, bs)  # bs is the global batch: the lr scaling follows it on any number of ranks
    local_bs = bs // world.size
    forward = _wrapped(model, device, world, tc.compile and cuda)
    autocast = autocast_for(device, tc.precision)

    # --- resume -----------------------------------------------------------------------
    start_epoch, step, best, wait, history = 0, 0, math.inf, 0, []
    ckpt_path = Path(tc.checkpoint_dir) / CHECKPOINT_NAME if tc.checkpoint_dir else None
    state = _read_checkpoint(ckpt_path, device, world)
    if state is not None:
        start_epoch, step, best, wait, history = _restore(state, cfg, ckpt_path, model, opt, world)
        if state.get("status"):  # the run had already ended; nothing more to do
            return PretrainResult(_plain(model, cfg, device, world), state["status"], state["reason"], start_epoch,
                                  step, best, history, None, ckpt_path, str(device), where.param(), where.reason)

    status, reason, diverged_step = "completed", f"reached train.epochs={tc.epochs}", None
    for epoch in range(start_epoch, tc.epochs):
        perm = _epoch_order(tc.seed, epoch, n, bs, steps_per_epoch, world)
        sums = torch.zeros(len(METRIC_NAMES), device=device)
        first_bad = torch.full((), -1, dtype=torch.long, device=device)
        model.train()
        stop_mid = None
        t0 = time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{tc.epochs}", leave=False,
                   disable=None if show else True, dynamic_ncols=True)  # None: off unless a TTY
        for x, _ in zip(epoch_batches(images, perm, local_bs, steps_per_epoch, device), bar):
            view_a, view_b = views(x)
            at = step if cfg.optim.schedule_every == "step" else epoch * steps_per_epoch
            lr = lr_at(at, total_steps, warmup, peak, cfg.optim.final_lr_ratio)
            set_lr(opt, lr)
            terms, z_a = train_step(forward, opt, view_a, view_b, cfg.loss, autocast)
            # --- bookkeeping on the device (no .item()): sums and first non-finite step --
            with torch.no_grad():
                vals = torch.stack([terms.loss, terms.invariance, terms.variance,
                                    terms.covariance, terms.std]).detach()
                sums += vals
                bad = ~torch.isfinite(terms.loss.detach())
                first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step),
                                        first_bad)
            step += 1
            if tc.log_every_steps and step % tc.log_every_steps == 0:
                # Deliberate sync, only when the user asked for per-step reports.
                m = dict(zip(METRIC_NAMES, vals.tolist())) | {"lr": lr}
                stop_mid = _decide(callbacks, Report("step", epoch, step, m, model), world)
                if stop_mid:  # the epoch is cut short: it is neither recorded nor checkpointed
                    break

        if stop_mid:
            bar.close()
            status, reason = "stopped", stop_mid
            break
        # --- end of epoch: one sync to read the sums ----------------------------------
        # Over ranks: the invariance is each rank's own; the loss's mean over ranks is the
        # global batch's loss (the variance and covariance terms already see the global batch).
        values = (distributed.mean_over_ranks(sums, world) / steps_per_epoch).tolist()
        bad_step = _first_bad_step(first_bad, world)
        elapsed = time.perf_counter() - t0
        bar.close()
        if bad_step >= 0 or not all(math.isfinite(v) for v in values):
            diverged_step = bad_step if bad_step >= 0 else step
            status, reason = "diverged", f"non-finite loss at step {diverged_step} (epoch {epoch + 1})"
            break
        metrics = dict(zip(METRIC_NAMES, values))
        metrics |= {"lr": lr, "images_per_s": min(n, steps_per_epoch * bs) / elapsed, "epoch_time_s": elapsed}
        if metrics["loss"] < best - tc.min_delta:
            best, wait = metrics["loss"], 0
        else:
            wait += 1
        if show:  # one line per epoch, also when the bar is off (logs, SLURM, nohup)
            tqdm.write(_epoch_line(epoch, tc.epochs, metrics))

        # A callback's stop (a prune) wins over early stopping on the same epoch: a pruned trial
        # must not be recorded as a finished one.
        stop = _decide(callbacks, Report("epoch", epoch, step, metrics, model), world)
        ended = ("stopped", stop) if stop else None
        if ended is None and tc.patience and wait >= tc.patience:
            ended = ("early_stopped", f"loss did not improve by {tc.min_delta} for "
                     f"{tc.patience} epochs (best {best:.4f})")
        # After the callbacks, so that what they added (a sweep's probe kappa) is kept: a
        # resumed sweep trial reports those values to its pruner again.
        history.append({"epoch": epoch + 1, **metrics})
        due = (epoch + 1) % tc.checkpoint_every == 0 or epoch + 1 == tc.epochs or ended
        if ckpt_path is not None and due and world.main:
            checkpoint.save(ckpt_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                "step": step, "best": best, "wait": wait, "history": history,
                "key": _training_key(cfg), "config": to_dict(cfg),
                "status": ended[0] if ended else None, "reason": ended[1] if ended else None,
                "world_size": world.size,
            })
        if ended:
            status, reason = ended
            break

    return PretrainResult(model=_plain(model, cfg, device, world), status=status, reason=reason, epochs=len(history),
                          steps=step, best_loss=best, history=history,
                          diverged_step=diverged_step, checkpoint=ckpt_path, device=str(device),
                          placement=where.param(), placement_reason=where.reason)
