"""The VICReg loss, with its three terms reported separately.

Source: Bardes, Ponce, LeCun, "VICReg", ICLR 2022 (arXiv:2105.04906), and the reference
code github.com/facebookresearch/vicreg main_vicreg.py (commit 4e12602), whose
conventions we follow numerically. lightly's ``VICRegLoss`` uses the same ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F


@dataclass
class VICRegTerms:
    """0-d tensors. `loss` is weighted; the three terms are unweighted; `std` (detached) is the
    first view's per-dimension standard deviation over the (global) batch, averaged over
    dimensions: a collapse monitor (near 0: collapsed)."""

    loss: torch.Tensor
    invariance: torch.Tensor
    variance: torch.Tensor
    covariance: torch.Tensor
    std: torch.Tensor


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward hands each process the gradient of its own slice.

    Each rank's loss depends on every rank's embeddings, so the gradient of the summed
    loss w.r.t. the local slice is the all-reduce of the gathered gradients
    (reference: FullGatherLayer in main_vicreg.py).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        all_grads = torch.stack(grads)
        dist.all_reduce(all_grads)
        return all_grads[dist.get_rank()]


def gather_batch(z: torch.Tensor) -> torch.Tensor:
    """(n, d) local -> (world*n, d) across processes, gradient-correct; identity when not distributed."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return torch.cat(_GatherWithGrad.apply(z), dim=0)
    return z


def _off_diagonal(m: torch.Tensor) -> torch.Tensor:
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def variance_term(z: torch.Tensor, eps: float = 1e-4, gamma: float = 1.0) -> torch.Tensor:
    """mean_j relu(gamma - sqrt(Var(z_j) + eps)) for z of shape (n, d); the paper's eqs. (3)-(4)."""
    std = torch.sqrt(z.var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def covariance_term(z: torch.Tensor) -> torch.Tensor:
    """sum_{i!=j} C(z)_ij^2 / d with C = centred z^T z / (n-1), z of shape (n, d); eqs. (5)-(6)."""
    n, d = z.shape
    z = z - z.mean(dim=0)
    cov = (z.T @ z) / (n - 1)
    return _off_diagonal(cov).pow(2).sum() / d


def _check(z_a: torch.Tensor, z_b: torch.Tensor) -> None:
    if z_a.ndim != 2 or z_b.ndim != 2:
        raise ValueError(
            f"vicreg_loss expects 2-D (batch, dim) embeddings, got {tuple(z_a.shape)} "
            f"and {tuple(z_b.shape)}"
        )
    if z_a.shape != z_b.shape:
        raise ValueError(
            f"vicreg_loss expects equal shapes, got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    if z_a.shape[0] < 2:
        raise ValueError(
            f"vicreg_loss needs a batch of at least 2 (variance over the batch), got "
            f"{tuple(z_a.shape)}"
        )


def vicreg_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    sim_coeff: float = 25.0,
    std_coeff: float = 25.0,
    cov_coeff: float = 1.0,
    eps: float = 1e-4,
) -> VICRegTerms:
    """VICReg loss of two views' embeddings, each of shape (n, d).

    Conventions (reference code, not the paper's equations as the original report writes them):
      - invariance = mean over all n*d elements of (z_a - z_b)^2, i.e. ``F.mse_loss``;
        the original report's eq. (2) divides the summed squared distances by n only, which is
        d times larger. Computed on the local batch, before any gather.
      - variance = (v(z_a) + v(z_b)) / 2: averaged over the two branches, where eq. (1)
        sums them (a known paper/code difference).
      - covariance = c(z_a) + c(z_b): summed over the branches, as in eq. (1).
      - total = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance.
    We follow the reference code because its default coefficients (25, 25, 1) were tuned
    for these scalings; with the paper's scalings the same coefficients weight the terms
    differently.

    Always computed in float32 (autocast off), since the variance hinge and the
    covariance sums lose too much precision in bf16. Under torch.distributed the
    variance and covariance terms see all processes' embeddings (gradient-correct gather).
    """
    _check(z_a, z_b)
    device_type = z_a.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        z_a = z_a.float()
        z_b = z_b.float()
        invariance = F.mse_loss(z_a, z_b)
        z_a = gather_batch(z_a)
        z_b = gather_batch(z_b)
        variance = variance_term(z_a, eps) / 2 + variance_term(z_b, eps) / 2
        covariance = covariance_term(z_a) + covariance_term(z_b)
        loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
        std = z_a.detach().std(dim=0).mean()
    return VICRegTerms(loss=loss, invariance=invariance, variance=variance, covariance=covariance, std=std)
