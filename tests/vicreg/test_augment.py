from __future__ import annotations

import pytest
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


# Every transform off: both views are the normalised image itself.
OFF = dict(crop_min_scale=1.0, crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, grayscale_p=0.0,
           blur_p_a=0.0, blur_p_b=0.0, solarize_p_a=0.0, solarize_p_b=0.0)


@pytest.mark.parametrize("off,on", [
    ({}, {"crop_min_scale": 0.08}),
    ({}, {"flip_p": 1.0}),
    ({}, {"jitter_p": 1.0}),
    ({"jitter_p": 1.0, "jitter_strength": 0.0}, {"jitter_strength": 1.0}),
    ({}, {"grayscale_p": 1.0}),
    ({}, {"blur_p_a": 1.0}),
    ({}, {"blur_p_b": 1.0}),
    ({}, {"solarize_p_a": 1.0}),
    ({}, {"solarize_p_b": 1.0}),
])
def test_each_dimension_at_its_extremes(off: dict, on: dict) -> None:
    """Off: both views are the image itself; on: the view(s) the key acts on differ from it
    (and `_a`/`_b` keys leave the other view alone). So a study searching any one of these
    keys really changes what pretraining sees."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 64, 64), generator=g, dtype=torch.uint8)
    zero, one = torch.zeros(3), torch.ones(3)
    torch.manual_seed(0)
    a, b = TwoViews(AugmentConfig(**{**OFF, **off}), 64, 3, zero, one)(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, x.float() / 255, rtol=0, atol=1e-5)
    torch.manual_seed(0)
    a, b = TwoViews(AugmentConfig(**{**OFF, **off, **on}), 64, 3, zero, one)(x)
    image = x.float() / 255
    key = next(iter(on))
    for name, view in (("a", a), ("b", b)):
        acts = not key.endswith(("_a", "_b")) or key.endswith(f"_{name}")
        changed = bool((view - image).abs().max() > 0.01)
        assert changed is acts, f"{on}: view {name} {'unchanged' if acts else 'changed'}"


def test_old_pair_keys_point_to_the_scalars() -> None:
    from vicreg.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"'augment.blur_p' is now augment.blur_p_a and augment.blur_p_b"):
        load_config(None, ["augment.blur_p=[1.0, 0.1]"])
    with pytest.raises(ConfigError, match=r"augment.flip_p=1.5 must be a probability"):
        load_config(None, ["augment.flip_p=1.5"])
    with pytest.raises(ConfigError, match=r"augment.crop_min_scale=0.0 must satisfy 0 < crop_min_scale"):
        load_config(None, ["augment.crop_min_scale=0"])


def test_view_b_solarises_and_view_a_does_not() -> None:
    cfg = AugmentConfig(**{**OFF, "solarize_p_b": 1.0})
    x = torch.full((4, 1, 16, 16), 230, dtype=torch.uint8)  # bright: solarised to dark
    tv = TwoViews(cfg, 16, 1, torch.zeros(1), torch.ones(1))
    a, b = tv(x)
    assert torch.allclose(a, torch.full_like(a, 230 / 255), atol=1e-4)
    assert torch.allclose(b, torch.full_like(b, 1 - 230 / 255), atol=1e-4)


def _full_crop(**over) -> AugmentConfig:
    """Every crop the whole image (scale 1, ratio 1), nothing else: the crop's resampling alone."""
    return AugmentConfig(crop_min_scale=1.0, crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, blur_p_a=0.0,
                         blur_p_b=0.0, solarize_p_b=0.0, **over)


def test_antialiased_crop_of_a_larger_source_is_the_area_average() -> None:
    # A whole 32 px image shrunk to 16 px is exactly 2x2 average pooling when area-averaged
    # (PIL's reduction); without antialiasing it is a bilinear sample that skips pixels.
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 1, 32, 32), generator=g, dtype=torch.uint8)
    one, zero = torch.ones(1), torch.zeros(1)
    area = torch.nn.functional.avg_pool2d(x.float() / 255, 2)
    a, b = TwoViews(_full_crop(antialias=True), 16, 1, zero, one)(x)
    assert torch.allclose(a, area, atol=1e-6) and torch.allclose(b, area, atol=1e-6)
    plain, _ = TwoViews(_full_crop(), 16, 1, zero, one)(x)
    assert (plain - area).abs().max() > 0.05


def test_torchvision_views_follow_the_same_recipe() -> None:
    # Smooth images (ramps), where torchvision's antialias filter (triangle) and ours (box)
    # agree: with every random transform off, both view makers give the same resized image.
    ramp = torch.linspace(20, 230, 24)
    x = torch.stack([(ramp[None, :] * (0.5 + i / 10) + ramp[:, None] * 0.2).clamp(0, 255) for i in range(6)])
    x = x.round().to(torch.uint8).unsqueeze(1)
    one, zero = torch.ones(1), torch.zeros(1)
    a, _ = TwoViews(_full_crop(views="torchvision", antialias=True), 12, 1, zero, one)(x)
    k, _ = TwoViews(_full_crop(antialias=True), 12, 1, zero, one)(x)
    assert a.shape == (6, 1, 12, 12) and (a - k).abs().max() < 3 / 255  # rounding and border handling
    # With the recipe on, views differ per image and between the two makers' draws.
    tv = TwoViews(AugmentConfig(views="torchvision"), 12, 1, *channel_stats(x))
    v1, v2 = tv(x)
    assert v1.shape == v2.shape == (6, 1, 12, 12) and not torch.equal(v1, v2)


def test_per_batch_normalisation_uses_the_view_batch() -> None:
    tv, x = _views(3)
    tv = TwoViews(AugmentConfig(normalise="batch"), 32, 3, tv.mean.flatten(), tv.std.flatten())
    a, b = tv(x)
    for v in (a, b):
        assert torch.allclose(v.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
        assert torch.allclose(v.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)


def test_bicubic_antialias_with_kornia_views_is_refused() -> None:
    from vicreg.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="augment.antialias=True with resample bicubic needs views torchvision"):
        config_from_dict({"augment": {"antialias": True, "resample": "bicubic"}})
    config_from_dict({"augment": {"antialias": True, "resample": "bicubic", "views": "torchvision"}})
