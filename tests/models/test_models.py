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


def test_narrow_resnet18_has_resnet18s_layout_at_a_quarter_of_its_width():
    def convs(m):
        return [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    for size in (32, 224):
        full, narrow = build_model("resnet18", 3, 10, size), build_model("resnet18-narrow", 3, 10, size)
        cf, cn = convs(full), convs(narrow)
        assert len(cf) == len(cn) == 20  # stem, 16 in the basic blocks, 3 projections
        assert [(c.kernel_size, c.stride) for c in cf] == [(c.kernel_size, c.stride) for c in cn]
        assert [c.out_channels // 4 for c in cf] == [c.out_channels for c in cn]
        assert narrow.dim == 128 and full.dim == 512
        pf = sum(p.numel() for p in full.parameters())
        pn = sum(p.numel() for p in narrow.parameters())
        assert 12 < pf / pn < 20
        x = torch.rand(2, 3, size, size)
        assert narrow.eval()(x).shape == (2, 10)
