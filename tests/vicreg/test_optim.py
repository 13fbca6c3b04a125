"""LARS semantics and the warm-up + cosine schedule, against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vicreg.config import OptimConfig
from vicreg.optim import LARS, build_optimizer, fused_for, lr_at, param_groups, warmup_steps


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def test_lars_one_step_matches_hand_computation() -> None:
    m = _model()
    lr, wd, eta = 0.5, 0.1, 0.02
    opt = LARS(param_groups(m, wd), lr=lr, eta=eta, momentum=0.9)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    grads = {n: torch.randn_like(p) for n, p in m.named_parameters()}
    for n, p in m.named_parameters():
        p.grad = grads[n].clone()
    opt.step()
    for n, p in m.named_parameters():
        p0, g = before[n], grads[n]
        if p0.ndim == 1:
            expected = p0 - lr * g  # 1-D: no decay, no adaptation
        else:
            g2 = g + wd * p0
            q = eta * p0.norm() / g2.norm()
            expected = p0 - lr * q * g2
        torch.testing.assert_close(p.detach(), expected, msg=n)


def test_lars_momentum_accumulates_over_steps() -> None:
    """Three steps with new gradients each time: mu_t = momentum * mu_{t-1} + q_t * g_t, by hand."""
    torch.manual_seed(1)
    p = nn.Parameter(torch.randn(3, 4))
    lr, wd, eta, mom = 0.1, 0.01, 0.02, 0.9
    opt = LARS([{"params": [p], "weight_decay": wd, "lars": True}], lr=lr, eta=eta, momentum=mom)
    w, mu = p.detach().clone(), torch.zeros(3, 4)
    for _ in range(3):
        g = torch.randn(3, 4)
        p.grad = g.clone()
        opt.step()
        g2 = g + wd * w
        mu = mom * mu + eta * w.norm() / g2.norm() * g2
        w = w - lr * mu
        torch.testing.assert_close(p.detach(), w)


@pytest.mark.parametrize("name, cls", [("lars", LARS), ("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                       ("adamw", torch.optim.AdamW)])
def test_build_optimizer_passes_the_config_on(name: str, cls: type) -> None:
    """What the config says reaches the optimiser: its class, lr, momentum or betas, and weight
    decay on weight matrices only (biases and norms get none). torch's own update arithmetic
    is torch's to test; LARS, ours, is checked by hand above."""
    cfg = OptimConfig(name=name, lr=0.05, momentum=0.8, betas=(0.7, 0.95), weight_decay=0.01)
    opt = build_optimizer(_model(), cfg)
    assert type(opt) is cls
    decays = sorted((g["weight_decay"], sum(p.numel() for p in g["params"])) for g in opt.param_groups)
    assert decays == [(0.0, 3 + 3 + 3), (0.01, 12)]  # Linear bias + BatchNorm weight and bias; Linear weight
    for g in opt.param_groups:
        assert g["lr"] == 0.05
        if name in ("lars", "sgd"):
            assert g["momentum"] == 0.8
        else:
            assert g["betas"] == (0.7, 0.95)
        assert g.get("fused", True)  # torch's optimisers run their fused kernels on the CPU (LARS has none)


def test_fused_kernels_only_where_torch_has_them() -> None:
    """fused=True raises on a device without the kernels: those get torch's default (None)."""
    cpu, meta = nn.Linear(2, 2), nn.Linear(2, 2, device="meta")
    assert fused_for(cpu.parameters()) is True
    assert fused_for([{"params": list(cpu.parameters())}]) is True
    assert fused_for(meta.parameters()) is None and fused_for([]) is None
    assert build_optimizer(meta, OptimConfig(name="adam")).param_groups[0]["fused"] is None


def test_lars_trust_ratio_is_one_for_zero_weights() -> None:
    p = nn.Parameter(torch.zeros(3, 3))
    opt = LARS([{"params": [p], "weight_decay": 0.0, "lars": True}], lr=1.0, eta=0.001)
    p.grad = torch.ones(3, 3)
    opt.step()
    torch.testing.assert_close(p.detach(), -torch.ones(3, 3))


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "lars"])
def test_no_weight_decay_on_biases_and_norms(name: str) -> None:
    m = _model()
    opt = build_optimizer(m, OptimConfig(name=name, lr=0.1, weight_decay=0.5))
    by_id = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for p in m.parameters():
        assert by_id[id(p)] == (0.0 if p.ndim == 1 else 0.5)


def test_schedule_warms_up_then_follows_the_cosine() -> None:
    peak, total, warm = 0.4, 100, 10
    assert lr_at(0, total, warm, peak, 0.001) == pytest.approx(0.04)
    assert lr_at(9, total, warm, peak, 0.001) == pytest.approx(0.4)
    assert lr_at(10, total, warm, peak, 0.001) == pytest.approx(0.4)
    mid = 10 + 45  # half-way through the cosine
    end = peak * 0.001
    assert lr_at(mid, total, warm, peak, 0.001) == pytest.approx(end + (peak - end) * 0.5)
    assert lr_at(100, total, warm, peak, 0.001) == pytest.approx(end)
    q = 10 + 18  # t = 18/90 = 0.2
    assert lr_at(q, total, warm, peak, 0.001) == pytest.approx(
        end + (peak - end) * 0.5 * (1 + math.cos(math.pi * 0.2)))
    assert lr_at(0, 10, 0, 1.0, 0.0) == pytest.approx(1.0)  # no warm-up


def test_lars_defaults_are_the_reference_whole() -> None:
    # facebookresearch/vicreg: base lr 0.2 scaled by batch/256, trust coefficient 0.001, wd 1e-6.
    from vicreg.config import OptimConfig
    from vicreg.optim import peak_lr

    cfg = OptimConfig()
    assert (cfg.name, cfg.lr, cfg.eta, cfg.weight_decay) == ("lars", 0.2, 0.001, 1e-6)
    assert peak_lr(cfg, 512) == pytest.approx(0.4)
    assert peak_lr(OptimConfig(name="adam", lr=1e-3), 512) == pytest.approx(1e-3)  # others: unscaled
    assert peak_lr(OptimConfig(name="adam", lr=1e-3, scale_lr_by_batch=True), 512) == pytest.approx(2e-3)


def test_warmup_as_a_fraction_follows_the_epochs() -> None:
    cfg = OptimConfig(warmup_epochs=10.0, warmup_fraction=0.05)
    assert warmup_steps(cfg, 100, 7) == 35 and warmup_steps(cfg, 20, 7) == 7  # 5% of the run either way
    fixed = OptimConfig(warmup_epochs=10.0)
    assert warmup_steps(fixed, 100, 7) == warmup_steps(fixed, 20, 7) == 70
    assert warmup_steps(fixed, 5, 7) == 35  # never longer than the run
