"""Data-parallel pretraining (vicreg/distributed.py) on the CPU with gloo: 2 processes compute
what one process computes on the concatenated batch, a step and a whole (short) training."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import tiny_config
from vicreg import checkpoint, distributed
from vicreg.config import ConfigError
from vicreg.distributed import World
from vicreg.model import build_model
from vicreg.train import _wrapped, pretrain, train_step

# A config whose views are the images themselves (no random augmentation): the ranks' views
# then equal one process's, and the comparisons test the training, not the random draws.
NO_AUGMENT = {"augment.crop_min_scale": 1.0, "augment.crop_ratio": "[1.0, 1.0]", "augment.flip_p": 0.0,
              "augment.jitter_p": 0.0, "augment.grayscale_p": 0.0, "augment.blur_p_a": 0.0, "augment.blur_p_b": 0.0,
              "augment.solarize_p_b": 0.0}
STEP = {"data.image_size": 16, "model.expander_hidden": 32, "model.expander_out": 32}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _views(channels: int, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(batch, channels, 16, 16, generator=g), torch.randn(batch, channels, 16, 16, generator=g)


def _step(world: World) -> dict:
    """One train_step of the tiny model on this rank's half of `_views` (all of it in one
    process) -> the loss terms and every parameter's gradient (DDP's average over ranks)."""
    cfg = tiny_config(**STEP)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(cfg.model, 16).to(memory_format=torch.channels_last)
    model = distributed.sync_batchnorm(model, device) if world.active else model
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the step leaves the weights, the gradients stay
    a, b = _views(cfg.model.in_channels)
    n = a.shape[0] // world.size
    part = slice(world.rank * n, (world.rank + 1) * n)
    terms, _ = train_step(_wrapped(model, device, world, False), opt, a[part], b[part], cfg.loss)
    return {"loss": terms.loss.item(), "invariance": terms.invariance.item(), "variance": terms.variance.item(),
            "covariance": terms.covariance.item(), "std": terms.std.item(),
            "grads": {k: p.grad.clone() for k, p in model.named_parameters()}}


def _rank_main(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    world, _ = distributed.setup(torch.device("cpu"))
    torch.save(_step(world), Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two gloo processes (mp.spawn): make test
def test_one_step_on_two_ranks_equals_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    """The loss terms and the gradients of a step on 2 ranks (each half of a batch of 16, BatchNorm
    synchronised, DDP averaging) equal one process's on the whole batch (float32 tolerance)."""
    whole = _step(World())
    mp.start_processes(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key in ("variance", "covariance", "std"):  # over the global batch: the same on every rank
        for r in ranks:
            assert r[key] == pytest.approx(whole[key], rel=1e-5), key
    # The invariance is each rank's own half; their mean is the whole batch's (and so is the loss's).
    for key in ("invariance", "loss"):
        assert (ranks[0][key] + ranks[1][key]) / 2 == pytest.approx(whole[key], rel=1e-5), key
    assert ranks[0]["invariance"] != pytest.approx(ranks[1]["invariance"], rel=1e-3)  # the halves differ
    assert whole["grads"].keys() == ranks[0]["grads"].keys()
    for name, g in whole["grads"].items():  # float32 sums in another order: relative to each tensor's scale
        for r in ranks:
            err = (r["grads"][name] - g).abs().max().item()
            assert err <= 1e-4 * g.abs().max().item() + 1e-6, (name, err, g.abs().max().item())


def test_each_rank_takes_its_part_of_every_global_batch() -> None:
    perm = torch.randperm(20)
    parts = [distributed.shard(perm, 8, 2, World(r, 2, r)) for r in range(2)]
    # Global batch i is rank 0's i-th local batch followed by rank 1's; the 4 left over are dropped.
    batches = [torch.cat([parts[0][i * 4:(i + 1) * 4], parts[1][i * 4:(i + 1) * 4]]) for i in range(2)]
    assert torch.equal(torch.cat(batches), perm[:16])
    assert torch.equal(distributed.shard(perm, 8, 2, World()), perm)


@pytest.mark.parametrize("sets,match", [
    ({"data.batch_size": 15}, r"data.batch_size=15 \(the global batch\) does not split over 2 processes"),
    ({"train.drop_last": False}, r"train.drop_last=false .* cannot be split evenly over 2 processes"),
])
def test_a_batch_that_does_not_split_is_one_line(sets: dict, match: str) -> None:
    cfg = tiny_config(**sets)
    with pytest.raises(ConfigError, match=match):
        distributed.check_config(cfg.data.batch_size, cfg.train.drop_last, World(0, 2, 0))


def test_resuming_with_another_number_of_processes_is_refused(synthetic_images, tmp_path: Path) -> None:
    cfg = tiny_config(**{"train.epochs": 2, "train.checkpoint_dir": str(tmp_path)})
    images = synthetic_images.train.images
    stopped = pretrain(cfg, images, [lambda rep: "stop" if rep.epoch == 0 else None])
    assert stopped.status == "stopped"
    state = checkpoint.read_checkpoint(tmp_path / "last.pt")
    assert state["world_size"] == 1
    checkpoint.save(tmp_path / "last.pt", state | {"world_size": 2, "status": None})
    with pytest.raises(ConfigError, match=r"last.pt was written by a 2-process training and this one has 1: "
                                          r"resume it with 2 \(torchrun --nproc_per_node 2"):
        pretrain(cfg, images)


@pytest.mark.slow  # two torchrun processes and a one-process reference: make test
def test_torchrun_pretraining_equals_the_one_process_run(synthetic_root: Path, tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m vicreg pretrain` (gloo, CPU) trains what `vicreg pretrain`
    trains in one process with the same global batch and seed: the same loss history over 2
    epochs and the same weights, to float32 tolerance (sums taken in another order): the loss to
    1e-4 relative, each term to 1e-3, each weight to 1e-3 of its tensor's scale + 1e-4. A small
    SGD step: at lr 0.02 the same comparison drifts 0.5% by epoch 2, and at lr 1e-9 it agrees to
    every printed digit, so the drift is rounding amplified by training, not a difference."""
    from vicreg.__main__ import main as cli_main

    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.is_file():
        pytest.skip("torchrun is installed with torch")
    sets = {**_tiny_sets(), "data.dataset": "synthetic", "data.root": str(synthetic_root),
            "data.cache_dir": str(tmp_path / "cache"), "data.image_size": 16, "train.epochs": 2, **NO_AUGMENT}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    assert cli_main(["pretrain", *args, "--set", f"train.checkpoint_dir={tmp_path / 'one'}"]) == 0
    one = checkpoint.read_checkpoint(tmp_path / "one" / "last.pt")
    argv = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "vicreg", "pretrain", *args,
            "--set", "train.device=cpu", "--set", f"train.checkpoint_dir={tmp_path / 'two'}"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert out.stdout.count("epoch   2/2") == 1, out.stdout  # rank 0 alone prints
    assert "on 2 processes" in out.stdout
    two = checkpoint.read_checkpoint(tmp_path / "two" / "last.pt")
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for mine, ref in zip(two["history"], one["history"], strict=True):
        for key in ("loss", "invariance", "variance", "covariance", "std"):
            # 1e-3: the covariance term sums squares of small off-diagonal entries, and measured
            # 1.3e-4 apart after 3 steps; the loss agrees to 1e-5.
            assert mine[key] == pytest.approx(ref[key], rel=1e-3), (mine["epoch"], key)
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-4)
    for name, w in two["model"].items():
        if w.is_floating_point():
            err = (w - one["model"][name]).abs().max().item()
            assert err <= 1e-3 * one["model"][name].abs().max().item() + 1e-4, (name, err)


def _tiny_sets() -> dict:
    """tiny_config's sizes as --set pairs for the command line, with SGD: Adam divides each update
    by the gradient's own scale, which turns float32 rounding (1e-7) into visible differences
    within a few steps, in one process as in two."""
    return {"data.batch_size": 16, "model.small_stem": "false", "model.expander_hidden": 64,
            "model.expander_out": 64, "model.expander_layers": 2, "optim.name": "sgd", "optim.lr": 1e-3,
            "optim.warmup_epochs": 0.0, "train.progress": "true", "data.include_test_in_pretrain": "false"}
