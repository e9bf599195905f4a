from __future__ import annotations

import pytest
import torch

from unlearnable.errors import UserError
from unlearnable.models.seg3d import SEG_MODELS, MedResNet3d, build_seg_model, load_pretrained


@pytest.mark.parametrize("name", SEG_MODELS.names())
def test_models_segment_at_input_size(name: str) -> None:
    m = build_seg_model(name, in_channels=2, num_classes=4, width=4)
    y = m(torch.rand(1, 2, 16, 16, 16))
    assert y.shape == (1, 4, 16, 16, 16)
    enc = {id(p) for mod in m.encoder() for p in mod.parameters()}
    dec = {id(p) for mod in m.decoder() for p in mod.parameters()}
    assert enc and dec and not enc & dec and len(enc | dec) == len(list(m.parameters()))


def test_med3d_layout() -> None:
    m = build_seg_model("resnet50", 1, 3, width=4)
    assert isinstance(m, MedResNet3d)
    assert m.conv1.kernel_size == (7, 7, 7) and m.conv1.stride == (2, 2, 2)
    assert m.layer2[0].conv2.stride == (2, 2, 2)
    assert m.layer3[0].conv2.dilation == (2, 2, 2) and m.layer3[0].conv2.stride == (1, 1, 1)
    assert m.layer4[0].conv2.dilation == (4, 4, 4) and m.layer4[0].conv2.stride == (1, 1, 1)
    assert m.features(torch.rand(1, 1, 32, 32, 32)).shape[2:] == (4, 4, 4)  # output stride 8
    assert m.layer4[-1].conv3.out_channels == 4 * 8 * 4  # bottleneck expansion


def test_medicalnet_weights_load_with_module_prefix(tmp_path) -> None:
    src = build_seg_model("resnet10", 1, 2, width=4)
    sd = {f"module.{k}": v for k, v in src.state_dict().items() if not k.startswith("conv_seg")}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "resnet_10.pth")
    dst = build_seg_model("resnet10", 3, 5, width=4)
    report = load_pretrained(dst, tmp_path / "resnet_10.pth")
    assert report["matched"] == report["encoder_tensors"] and report["missing"] == 0
    assert torch.equal(dst.layer4[0].conv1.weight, src.layer4[0].conv1.weight)
    # a 1-channel conv1 is spread over the 3 input channels
    assert torch.allclose(dst.conv1.weight.sum(1, keepdim=True), src.conv1.weight)


def test_weights_for_another_model_are_refused(tmp_path) -> None:
    torch.save(build_seg_model("resnet10", 1, 2, width=8).state_dict(), tmp_path / "w.pth")
    with pytest.raises(UserError, match="encoder tensors match"):
        load_pretrained(build_seg_model("resnet10", 1, 2, width=4), tmp_path / "w.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        load_pretrained(build_seg_model("resnet10", 1, 2, width=4), tmp_path / "junk.pth")
