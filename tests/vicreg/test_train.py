"""Pretraining behaviour: learning, early stopping, divergence, callbacks, exact resume."""

from __future__ import annotations

import pytest
import torch
import torchvision

import vicreg.train as train_mod
from tests.conftest import tiny_config
from vicreg.augment import TwoViews, channel_stats
from vicreg.checkpoint import load_encoder_checkpoint
from vicreg.loss import vicreg_loss
from vicreg.model import build_model
from vicreg.train import pretrain


def _loss_on_fixed_views(model: torch.nn.Module, cfg, images: torch.Tensor) -> float:
    """VICReg's loss of `model` on one fixed pair of views of `images` (the same crops, flips
    and colours for every model it is asked about), batch statistics as in training."""
    torch.manual_seed(123)
    a, b = TwoViews(cfg.augment, cfg.data.image_size, cfg.model.in_channels, *channel_stats(images))(images)
    with torch.no_grad():
        z_a, z_b = model.train()(a, b)
        return float(vicreg_loss(z_a, z_b, cfg.loss.sim_coeff, cfg.loss.std_coeff, cfg.loss.cov_coeff).loss)


def test_a_few_epochs_lower_the_loss_without_collapse(synthetic_images) -> None:
    """Five epochs lower the loss on the same views of the training images, against the
    network they started from. (Per-epoch training losses are means over 3 batches of fresh
    random views: on seed 1 the fourth epoch's was above the first's. On fixed views, with
    tiny_config's ImageNet stem, the drop after five epochs was 0.63 to 1.37 over seeds 0-4,
    so 0.3 fails only a trainer that learns half as fast as the slowest of them; with the
    CIFAR stem two epochs cost three times as much for the same drops.)"""
    cfg = tiny_config(**{"train.epochs": 5, "optim.lr": 3e-3})
    images = synthetic_images.train.images
    torch.manual_seed(cfg.train.seed)  # the initial network pretrain builds
    start = build_model(cfg.model, cfg.data.image_size)
    r = pretrain(cfg, images)
    assert r.status == "completed" and r.epochs == 5
    before, after = _loss_on_fixed_views(start, cfg, images), _loss_on_fixed_views(r.model.cpu(), cfg, images)
    assert after < before - 0.3, (before, after)
    assert all(h["std"] > 0.05 for h in r.history)
    for key in ("loss", "invariance", "variance", "covariance", "lr", "std", "images_per_s"):
        assert key in r.history[0]


def test_early_stopping_fires_when_the_loss_stalls(synthetic_images) -> None:
    # A learning rate of ~0 cannot lower the loss by min_delta=5.
    cfg = tiny_config(**{"train.epochs": 10, "optim.lr": 1e-12, "train.patience": 2,
                         "train.min_delta": 5.0})
    r = pretrain(cfg, synthetic_images.train.images)
    assert r.status == "early_stopped"
    assert r.epochs == 3  # best at epoch 1, then 2 epochs without improvement
    assert "did not improve" in r.reason


def test_early_stopping_is_off_by_default_and_a_prune_wins_over_it(synthetic_images) -> None:
    assert tiny_config().train.patience == 0
    # Early stopping would fire at epoch 3 (as above); a callback stops the same epoch: the
    # run is "stopped" (pruned by the sweep), not "early_stopped" (recorded as finished).
    cfg = tiny_config(**{"train.epochs": 10, "optim.lr": 1e-12, "train.patience": 2,
                         "train.min_delta": 5.0})
    r = pretrain(cfg, synthetic_images.train.images, [lambda rep: "pruned" if rep.epoch == 2 else None])
    assert (r.status, r.reason, r.epochs) == ("stopped", "pruned", 3)


def test_non_finite_loss_ends_the_run_as_diverged(synthetic_images, monkeypatch) -> None:
    real = train_mod.vicreg_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:  # the 5th step (index 4), in epoch 2 (3 steps per epoch)
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(train_mod, "vicreg_loss", poisoned)
    r = pretrain(tiny_config(**{"train.epochs": 4}), synthetic_images.train.images)
    assert r.status == "diverged"
    assert r.diverged_step == 4
    assert r.epochs == 1 and "step 4" in r.reason


def test_callbacks_see_each_epoch_and_can_stop(synthetic_images) -> None:
    seen = []

    def cb(report):
        seen.append((report.kind, report.epoch, round(report.metrics["loss"], 6)))
        return "pruned at epoch 2" if report.epoch == 1 else None

    r = pretrain(tiny_config(**{"train.epochs": 5}), synthetic_images.train.images, [cb])
    assert [s[:2] for s in seen] == [("epoch", 0), ("epoch", 1)]
    assert r.status == "stopped" and r.reason == "pruned at epoch 2"


def test_step_reports_when_asked(synthetic_images) -> None:
    steps = []
    cfg = tiny_config(**{"train.epochs": 1, "train.log_every_steps": 1})
    def cb(report):
        if report.kind == "step":
            steps.append(report.step)

    pretrain(cfg, synthetic_images.train.images, [cb])
    assert steps == [1, 2, 3]


@pytest.mark.slow  # a subprocess end to end: make test, not make test-fast
def test_resume_after_a_crash_is_bit_identical(synthetic_images, tmp_path) -> None:
    images = synthetic_images.train.images
    cfg_a = tiny_config(**{"train.epochs": 3, "train.checkpoint_dir": str(tmp_path / "a")})
    straight = pretrain(cfg_a, images)

    def crash(report):
        if report.epoch == 1:
            raise KeyboardInterrupt  # dies before epoch 2's checkpoint is written

    cfg = tiny_config(**{"train.epochs": 3, "train.checkpoint_dir": str(tmp_path / "b")})
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, images, [crash])
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 0
    resumed = pretrain(cfg, images)
    assert resumed.epochs == 3
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]


def test_resume_with_another_config_is_refused(synthetic_images, tmp_path) -> None:
    images = synthetic_images.train.images
    pretrain(tiny_config(**{"train.epochs": 1, "train.checkpoint_dir": str(tmp_path)}), images)
    with pytest.raises(ValueError, match="different config.*optim"):
        pretrain(tiny_config(**{"train.epochs": 1, "optim.lr": 0.5,
                                "train.checkpoint_dir": str(tmp_path)}), images)


def test_unreadable_checkpoint_is_moved_aside_and_training_starts_over(synthetic_images, tmp_path) -> None:
    images = synthetic_images.train.images
    cfg = tiny_config(**{"train.epochs": 1, "train.checkpoint_dir": str(tmp_path)})
    straight = pretrain(tiny_config(**{"train.epochs": 1}), images)
    pretrain(cfg, images)
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    moved = r"last.pt: unreadable, truncated or not a torch file .*moved to last.pt.corrupt-.*from scratch"
    with pytest.warns(UserWarning, match=moved):
        again = pretrain(cfg, images)
    assert len(list(tmp_path.glob("last.pt.corrupt-*"))) == 1 and ckpt.is_file()
    assert [h["loss"] for h in again.history] == [h["loss"] for h in straight.history]


def test_checkpoint_reloads_the_model(synthetic_images, tmp_path) -> None:
    r = pretrain(tiny_config(**{"train.epochs": 1, "train.checkpoint_dir": str(tmp_path)}),
                 synthetic_images.train.images)
    raw, encoder = load_encoder_checkpoint(tmp_path / "last.pt")
    assert raw["data"]["image_size"] == 32
    for a, b in zip(r.model.encoder.state_dict().values(), encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_imagenet_start_is_logged_and_reloads_without_the_file(synthetic_images, tmp_path, monkeypatch) -> None:
    """Continued pretraining from a weights file; the checkpoint's config names the file and
    pins the stem, and loading it needs no file (every weight is in the checkpoint)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    hub = tmp_path / "home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    hub.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), hub)
    r = pretrain(tiny_config(**{"train.epochs": 1, "model.init": "auto", "train.checkpoint_dir": str(tmp_path)}),
                 synthetic_images.train.images)
    assert r.model.encoder.conv1.kernel_size == (7, 7)
    hub.unlink()
    raw, encoder = load_encoder_checkpoint(tmp_path / "last.pt")
    assert raw["model"]["weights"] == str(hub) and raw["model"]["small_stem"] is False
    for a, b in zip(r.model.encoder.state_dict().values(), encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape,dtype,match", [
    ((40, 1, 32, 32), torch.float32, "uint8"),
    ((40, 3, 32, 32), torch.uint8, "in_channels=1"),
    ((40, 1, 64, 64), torch.uint8, "image_size=32"),
    ((8, 1, 32, 32), torch.uint8, "fewer than data.batch_size=16"),
])
def test_bad_images_fail_before_training(shape, dtype, match) -> None:
    with pytest.raises(ValueError, match=match):
        pretrain(tiny_config(), torch.zeros(shape, dtype=dtype))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_channels_last_run(synthetic_images) -> None:
    cfg = tiny_config(**{"train.epochs": 2, "train.device": "cuda"})
    r = pretrain(cfg, synthetic_images.train.images)
    assert r.status == "completed" and r.device.startswith("cuda")
    assert next(r.model.parameters()).is_cuda


def test_drop_last_off_trains_on_the_partial_batch(synthetic_images) -> None:
    images = synthetic_images.train.images[:40]  # batch 16: 2 full batches + 8 images
    assert pretrain(tiny_config(**{"train.epochs": 1}), images).steps == 2
    assert pretrain(tiny_config(**{"train.epochs": 1, "train.drop_last": False}), images).steps == 3
    # A remainder of a single image has no variance to take: it is dropped either way.
    assert pretrain(tiny_config(**{"train.epochs": 1, "train.drop_last": False}), images[:33]).steps == 2


def test_lr_per_epoch_holds_within_an_epoch(synthetic_images) -> None:
    seen: list[float] = []
    cfg = tiny_config(**{"train.epochs": 2, "train.log_every_steps": 1, "optim.schedule_every": "epoch"})
    pretrain(cfg, synthetic_images.train.images[:48], [lambda r: seen.append(r.metrics["lr"]) if r.kind == "step"
                                                       else None])
    assert len(seen) == 6 and len(set(seen[:3])) == 1 and len(set(seen[3:])) == 1 and seen[0] != seen[3]


def test_crops_from_a_larger_cache(synthetic_images) -> None:
    cfg = tiny_config(**{"train.epochs": 1, "data.image_size": 16, "data.crop_source_size": 32,
                         "augment.antialias": True})
    r = pretrain(cfg, synthetic_images.train.images)  # the 32 px cache; views and model at 16 px
    assert r.status == "completed"
    with pytest.raises(ValueError, match="data.crop_source_size=32"):
        pretrain(cfg, synthetic_images.train.images[:, :, :16, :16].contiguous())


def test_a_step_report_can_stop_training_mid_epoch(synthetic_images) -> None:
    """A step callback's answer stops at once: the cut epoch is neither in the history nor
    counted (what benchmarks use to time a few steps of a large set)."""
    seen = []

    def stop_at_3(report):
        seen.append(report.step)
        return "enough" if report.step == 3 else None

    r = pretrain(tiny_config(**{"train.log_every_steps": 1, "train.epochs": 2}), synthetic_images.train.images,
                 [stop_at_3])
    assert (r.status, r.reason, r.steps, r.epochs, r.history) == ("stopped", "enough", 3, 0, [])
    assert seen == [1, 2, 3]
