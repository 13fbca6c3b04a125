from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from vicreg.config import ModelConfig
from vicreg.model import build_expander, build_model


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
    m = build_model(ModelConfig(arch="resnet50", expander_hidden=32, expander_out=8), 32)
    assert m.feature_dim == 2048
    assert m.encoder(torch.randn(2, 1, 32, 32)).shape == (2, 2048)


def test_expander_layout() -> None:
    e = build_expander(512, 128, 3, 64)
    kinds = [type(x).__name__ for x in e]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert e[-1].bias is None and e[0].out_features == 128 and e[-1].out_features == 64
    assert [type(x).__name__ for x in build_expander(512, 128, 1, 64)] == ["Linear"]


def test_local_weights_are_loaded_and_summed_for_grey(tmp_path) -> None:
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    m = build_model(ModelConfig(weights=str(path), in_channels=1), 224)
    torch.testing.assert_close(m.encoder.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    torch.testing.assert_close(m.encoder.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))


def test_missing_weights_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        build_model(ModelConfig(weights=str(tmp_path / "nope.pth")), 224)
