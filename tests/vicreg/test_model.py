from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from vicreg.config import ConfigError, ModelConfig
from vicreg.imagenet import ENV, STANDARD_FILES, init_weights
from vicreg.model import build_expander, build_model, uses_small_stem


@pytest.mark.parametrize("size,channels,small", [(32, 1, True), (64, 3, True), (96, 1, False)])
def test_shapes_and_stem(size: int, channels: int, small: bool) -> None:
    m = build_model(ModelConfig(in_channels=channels, expander_hidden=32, expander_out=16), size)
    m.eval()
    z = m(torch.randn(2, channels, size, size))
    assert z.shape == (2, 16)
    assert m.encoder.conv1.in_channels == channels
    assert (m.encoder.conv1.kernel_size == (3, 3)) is small
    assert isinstance(m.encoder.maxpool, nn.Identity) is small


def test_resnet50_feature_dim() -> None:
    m = build_model(ModelConfig(arch="resnet50", in_channels=1, expander_hidden=32, expander_out=8), 32)
    assert m.feature_dim == 2048
    assert m.encoder(torch.randn(2, 1, 32, 32)).shape == (2, 2048)


def test_expander_is_linear_bn_relu_blocks_then_a_biasless_linear() -> None:
    e = build_expander(512, 128, 3, 64)
    kinds = [type(x).__name__ for x in e]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert e[-1].bias is None and e[0].out_features == 128 and e[-1].out_features == 64
    assert [type(x).__name__ for x in build_expander(512, 128, 1, 64)] == ["Linear"]


def _torchvision_file(path, seed: int = 1) -> torchvision.models.ResNet:
    """A torchvision-format ResNet-18 state-dict file (seeded), standing in for ImageNet's."""
    torch.manual_seed(seed)
    ref = torchvision.models.resnet18(weights=None)
    for bn in (m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)):  # non-trivial running stats
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ref.state_dict(), path)
    return ref.eval()


def test_init_imagenet_loads_the_file_and_matches_torchvision(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-home"))
    ref = _torchvision_file(tmp_path / "r18.pth")
    m = build_model(ModelConfig(init="imagenet", weights=str(tmp_path / "r18.pth"), in_channels=3), 224).eval()
    torch.manual_seed(0)
    random = build_model(ModelConfig(in_channels=3), 224)
    assert not torch.allclose(m.encoder.conv1.weight, random.encoder.conv1.weight)
    x = torch.randn(2, 3, 64, 64)
    ref.fc = nn.Identity()
    with torch.no_grad():  # the same features as torchvision's own network with these weights
        torch.testing.assert_close(m.encoder(x), ref(x))
    grey = build_model(ModelConfig(init="imagenet", weights=str(tmp_path / "r18.pth"), in_channels=1), 32)
    torch.testing.assert_close(grey.encoder.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    torch.testing.assert_close(grey.encoder.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))
    assert grey.encoder.conv1.kernel_size == (7, 7)  # the ImageNet stem, even at 32 px


def test_init_finds_the_file_in_torch_hub_cache_or_environment(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(ENV, raising=False)
    assert init_weights(ModelConfig(init="auto")) is None  # nothing there: auto starts random
    assert uses_small_stem(ModelConfig(init="auto"), 32)
    with pytest.raises(ConfigError, match=r"model.init=imagenet: no weights file for resnet18 .*"
                                          r"resnet18-f37072fd.pth.*never downloaded"):
        build_model(ModelConfig(init="imagenet", in_channels=1), 32)
    hub = tmp_path / "home" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    _torchvision_file(hub)
    assert init_weights(ModelConfig(init="auto")) == hub and not uses_small_stem(ModelConfig(init="auto"), 32)
    assert init_weights(ModelConfig(init="imagenet")) == hub
    other = tmp_path / "other.pth"
    _torchvision_file(other, seed=2)
    monkeypatch.setenv(ENV, str(other))  # the environment (what --imagenet-weights sets) wins
    assert init_weights(ModelConfig(init="imagenet")) == other
    monkeypatch.setenv(ENV, str(tmp_path / "typo.pth"))
    with pytest.raises(ConfigError, match=r"VICREG_IMAGENET_WEIGHTS: .*typo.pth does not exist"):
        init_weights(ModelConfig(init="auto"))


def test_standard_file_names_are_torchvisions() -> None:
    enums = {"resnet18": torchvision.models.ResNet18_Weights, "resnet34": torchvision.models.ResNet34_Weights,
             "resnet50": torchvision.models.ResNet50_Weights}
    for arch, names in STANDARD_FILES.items():
        assert set(names) == {w.url.rsplit("/", 1)[1] for w in enums[arch]}
        assert names[0] == enums[arch].DEFAULT.url.rsplit("/", 1)[1]


def test_missing_or_damaged_weights_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="never downloaded"):
        build_model(ModelConfig(init="imagenet", weights=str(tmp_path / "nope.pth")), 224)
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="bad.pth is not a readable torch state dict"):
        build_model(ModelConfig(init="imagenet", weights=str(tmp_path / "bad.pth")), 224)


def test_zero_init_residual_and_expander_bias_follow_the_config() -> None:
    from vicreg.config import ModelConfig
    from vicreg.model import build_encoder, build_expander

    last_bn = [lambda net: net.layer1[0].bn2.weight]
    for zero in (True, False):
        net = build_encoder(ModelConfig(zero_init_residual=zero, in_channels=1), 32)
        w = last_bn[0](net)
        assert bool((w == 0).all()) is zero
    assert build_expander(8, 16, 3, 4)[-1].bias is None
    assert build_expander(8, 16, 3, 4, last_bias=True)[-1].bias is not None
