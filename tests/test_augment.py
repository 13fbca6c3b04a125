from __future__ import annotations

import torch

from vicreg.augment import TwoViews, channel_stats
from vicreg.config import AugmentConfig


def _views(channels: int, size: int = 32) -> tuple[TwoViews, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8, channels, size, size), generator=g, dtype=torch.uint8)
    mean, std = channel_stats(x)
    return TwoViews(AugmentConfig(), size, channels, mean, std), x


def test_two_views_shapes_and_normalisation() -> None:
    for channels in (1, 3):
        tv, x = _views(channels)
        a, b = tv(x)
        assert a.shape == b.shape == (8, channels, 32, 32) and a.dtype == torch.float32
        assert not torch.equal(a, b)
        assert abs(a.mean().item()) < 1.0


def test_parameters_are_drawn_per_sample() -> None:
    tv, x = _views(1)
    same = x[:1].repeat(8, 1, 1, 1)  # one image eight times
    a, _ = tv(same)
    diffs = [(a[0] - a[i]).abs().mean().item() for i in range(1, 8)]
    assert min(diffs) > 0  # every copy got its own crop/jitter


def test_seeded_views_are_reproducible() -> None:
    tv, x = _views(3)
    torch.manual_seed(5)
    a1, b1 = tv(x)
    torch.manual_seed(5)
    a2, b2 = tv(x)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)


def test_view_b_solarises_and_view_a_does_not() -> None:
    cfg = AugmentConfig(solarize_p=(0.0, 1.0), blur_p=(0.0, 0.0), jitter_p=0.0, flip_p=0.0,
                        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0))
    x = torch.full((4, 1, 16, 16), 230, dtype=torch.uint8)  # bright: solarised to dark
    tv = TwoViews(cfg, 16, 1, torch.zeros(1), torch.ones(1))
    a, b = tv(x)
    assert torch.allclose(a, torch.full_like(a, 230 / 255), atol=1e-4)
    assert torch.allclose(b, torch.full_like(b, 1 - 230 / 255), atol=1e-4)
