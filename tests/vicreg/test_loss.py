"""The VICReg loss against an independent float64 reference of the reference-code formulas."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from vicreg.loss import vicreg_loss


def reference(a: np.ndarray, b: np.ndarray, eps: float = 1e-4) -> tuple[float, float, float, float]:
    """The formulas of facebookresearch/vicreg's main_vicreg.py (commit 4e12602), written out with
    explicit loops in float64."""
    n, d = a.shape
    inv = sum((a[i, j] - b[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def var(z: np.ndarray) -> float:
        total = 0.0
        for j in range(d):
            col = z[:, j]
            s = math.sqrt(((col - col.mean()) ** 2).sum() / (n - 1) + eps)
            total += max(0.0, 1.0 - s)
        return total / d

    def cov(z: np.ndarray) -> float:
        zc = z - z.mean(axis=0)
        total = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    c = sum(zc[k, i] * zc[k, j] for k in range(n)) / (n - 1)
                    total += c * c
        return total / d

    v = var(a) / 2 + var(b) / 2
    c = cov(a) + cov(b)
    return 25 * inv + 25 * v + c, inv, v, c


@pytest.mark.parametrize("n,d,scale", [(2, 3, 1.0), (8, 5, 0.3), (16, 12, 2.0), (5, 1, 0.5)])
def test_loss_terms_match_the_reference_implementation(n: int, d: int, scale: float) -> None:
    rng = np.random.default_rng(n * 100 + d)
    a = rng.normal(0, scale, (n, d))
    b = a + rng.normal(0, 0.5 * scale, (n, d))
    out = vicreg_loss(torch.from_numpy(a), torch.from_numpy(b))
    ref = reference(a, b)
    got = (out.loss.item(), out.invariance.item(), out.variance.item(), out.covariance.item())
    assert got == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_symmetric_and_identical_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    ab, ba = vicreg_loss(a, b), vicreg_loss(b, a)
    assert ab.loss.item() == pytest.approx(ba.loss.item(), rel=1e-6)
    same = vicreg_loss(a, a.clone())
    assert same.invariance.item() == 0.0


def test_constant_embeddings_give_full_variance_penalty() -> None:
    z = torch.full((10, 8), 3.0)
    out = vicreg_loss(z, z.clone())
    # std = sqrt(0 + 1e-4) = 0.01 in every dimension -> hinge 0.99, for both branches.
    assert out.variance.item() == pytest.approx(0.99, abs=1e-6)
    assert out.covariance.item() == 0.0
    assert out.loss.item() == pytest.approx(25 * 0.99, abs=1e-4)


def test_decorrelated_gaussians_have_small_regularisers() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = 1.5 * torch.randn(8192, 16, generator=g), 1.5 * torch.randn(8192, 16, generator=g)
    out = vicreg_loss(a, b)
    assert out.variance.item() == 0.0  # every std ~1.5 > 1
    assert out.covariance.item() < 0.05
    # Correlated dimensions must be penalised: the same test would fail for them.
    a2 = torch.cat([a[:, :8], a[:, :8]], dim=1)
    assert vicreg_loss(a2, a2).covariance.item() > 1.0


def test_gradients_flow_to_both_branches() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(16, 8, generator=g, requires_grad=True)
    b = torch.randn(16, 8, generator=g, requires_grad=True)
    vicreg_loss(a, b).loss.backward()
    for t in (a, b):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_float32_under_autocast() -> None:
    a = torch.randn(8, 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = vicreg_loss(a, a + 0.1)
    assert out.loss.dtype == torch.float32


@pytest.mark.parametrize("a,b,match", [
    ((8,), (8,), r"2-D .*\(8,\)"),
    ((8, 4), (8, 5), r"equal shapes.*\(8, 4\).*\(8, 5\)"),
    ((1, 4), (1, 4), r"at least 2.*\(1, 4\)"),
    ((2, 3, 4), (2, 3, 4), r"2-D"),
])
def test_errors_name_shapes(a: tuple, b: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vicreg_loss(torch.zeros(a), torch.zeros(b))


def _dist_worker(rank: int, world: int, port: int, a: torch.Tensor, b: torch.Tensor, q) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = a.shape[0] // world
    la = a[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    lb = b[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    out = vicreg_loss(la, lb)
    (out.variance + out.covariance).backward()
    # Plain numbers, not a tensor: torch sends a tensor through a queue as a shared file
    # descriptor, which this process may have taken with it on exit (a connection-reset race).
    q.put((rank, out.variance.item(), out.covariance.item(), la.grad.tolist()))
    dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes (mp.spawn): make test
def test_distributed_gather_sees_all_processes_with_correct_gradient() -> None:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(16, 6, generator=g), torch.randn(16, 6, generator=g)
    full_a = a.clone().requires_grad_(True)
    full = vicreg_loss(full_a, b)
    (full.variance + full.covariance).backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_dist_worker, args=(r, 2, port, a, b, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(q.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for rank, var, cov, grad in results:
        assert var == pytest.approx(full.variance.item(), rel=1e-5)
        assert cov == pytest.approx(full.covariance.item(), rel=1e-5)
        # Each rank's gradient is the all-reduced one: world_size x the full-batch rows
        # (DDP then averages over ranks, giving the full-batch gradient).
        torch.testing.assert_close(torch.tensor(grad), 2 * full_a.grad[rank * 8:(rank + 1) * 8], rtol=1e-4, atol=1e-6)
