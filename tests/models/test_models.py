from __future__ import annotations

import pytest
import torch

from unlearnable.models import MODELS, build_model


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_every_victim_builds_for_any_channels_and_size(name, channels, size):
    torch.manual_seed(0)
    m = build_model(name, channels, 7, size)
    x = torch.rand(2, channels, size, size)
    m.eval()
    assert m(x).shape == (2, 7)
    assert m.embed(x).shape == (2, m.dim)


def test_large_inputs_use_the_imagenet_stem():
    small = build_model("resnet18", 3, 10, 32)
    large = build_model("resnet18", 3, 10, 224)
    assert small.features[0][0].stride == (1, 1) and large.features[0][0].stride == (2, 2)
