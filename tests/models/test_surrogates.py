"""Pretrained surrogates from local files: torchvision / timm checkpoints, wrappers, counts, refusals."""

from __future__ import annotations

import json
import re
import struct

import pytest
import torch
import torch.nn as nn
import torchvision.models as tvm

from helpers import run_cli
from helpers import write_train_test_npz as npz
from unlearnable.errors import UserError
from unlearnable.models import MODELS, build_model
from unlearnable.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, identify, load_pretrained, read_state_dict
from unlearnable.protect.ssl import load_surrogate_weights

# timm's mobilenetv2_100 names, written out from timm's EfficientNet / DepthwiseSeparableConv / InvertedResidual
# definitions (timm is not a dependency): conv_stem, bn1, blocks.S.B.*, conv_head, bn2, classifier.
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
STAGES = (1, 2, 3, 4, 3, 3, 1)


def timm_mobilenetv2_names() -> list[str]:
    names = ["conv_stem.weight", *[f"bn1.{t}" for t in BN]]
    for s, n in enumerate(STAGES):
        for b in range(n):
            parts = (("conv_dw", "bn1", "conv_pw", "bn2") if s == 0 else
                     ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl", "bn3"))
            for part in parts:
                names += [f"blocks.{s}.{b}.{part}.weight"] if part.startswith("conv") else \
                    [f"blocks.{s}.{b}.{part}.{t}" for t in BN]
    return names + ["conv_head.weight", *[f"bn2.{t}" for t in BN], "classifier.weight", "classifier.bias"]


def randomised(model: nn.Module) -> dict[str, torch.Tensor]:
    """A state dict with non-trivial batch-norm statistics, so a wrong mapping cannot give the same features."""
    g = torch.Generator().manual_seed(0)
    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("running_mean") or k.endswith(".bias"):
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("running_var") or (k.endswith(".weight") and v.dim() == 1):
            sd[k] = 0.5 + torch.rand(v.shape, generator=g)
    return sd


def reference_features(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled features of a torchvision network on ImageNet-normalised RGB input."""
    x = x.expand(-1, 3, -1, -1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return net.eval()((x - mean) / std)


def test_torchvision_resnet18_plain_and_wrapped_files_give_the_checkpoints_features(tmp_path):
    net = tvm.resnet18(weights=None)
    sd = randomised(net)
    net.load_state_dict(sd)
    net.fc = nn.Identity()
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    torch.save({"model": sd}, tmp_path / "model.pth")
    x = torch.rand(2, 1, 24, 24)
    want = reference_features(net, x)
    for name in ("plain.pth", "ddp.pth", "model.pth"):
        model = build_model("resnet18", 1, 2, 24)  # grey images, small-image stem
        rep = load_surrogate_weights(model, tmp_path / name, arch="resnet18")
        assert (rep["matched"], rep["missing"], rep["unexpected"], rep["mismatched_shape"], rep["head"]) == \
            (120, 0, 0, 0, 2), name
        assert "resnet18" in rep["looks_like"] and any("stem" in a for a in rep["adapted"])
        with torch.no_grad():
            got = model.eval().features(x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["torchvision", "timm"])
def test_mobilenetv2_torchvision_and_timm_names(layout):
    net = tvm.mobilenet_v2(weights=None)
    sd = randomised(net)
    net.load_state_dict(sd)
    net.classifier = nn.Identity()
    if layout == "timm":
        names = timm_mobilenetv2_names()
        assert len(names) == len(sd)
        sd = dict(zip(names, sd.values()))  # both layouts list the same modules in the same order
    model = build_model("mobilenetv2", 3, 2, 32)
    rep = load_pretrained(model, "mobilenetv2", sd, "mem")
    assert (rep["matched"], rep["missing"], rep["unexpected"], rep["mismatched_shape"], rep["head"]) == \
        (312, 0, 0, 0, 2)
    assert rep["looks_like"] == f"a {layout} mobilenet{'_v2' if layout == 'torchvision' else 'v2'} state dict"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        got = model.eval().features(x)
    torch.testing.assert_close(got, reference_features(net, x), rtol=1e-4, atol=1e-5)


def test_resnet50_counts_and_wrong_architecture_names_the_right_one():
    sd = tvm.resnet50(weights=None).state_dict()
    assert identify(sd).arch == "resnet50"
    rep = load_pretrained(build_model("resnet50", 3, 2, 32), "resnet50", sd, "r50.pth")
    assert rep["missing"] == rep["unexpected"] == rep["mismatched_shape"] == 0 and rep["head"] == 2
    assert rep["matched"] == len(sd) - 2
    with pytest.raises(UserError, match=r"looks like a torchvision/timm resnet50 state dict; pass --surrogate "
                                        r"resnet50$"):
        load_pretrained(build_model("resnet18", 3, 2, 32), "resnet18", sd, "r50.pth")


def test_unsupported_families_are_named():
    deep = {"conv1.0.weight": torch.zeros(32, 3, 3, 3), "layer1.0.conv1.weight": torch.zeros(64, 64, 3, 3)}
    assert "deep stem" in identify(deep).description
    vit = {"patch_embed.proj.weight": torch.zeros(1), "blocks.0.attn.qkv.weight": torch.zeros(1)}
    with pytest.raises(UserError, match="looks like a timm vision transformer state dict; supported"):
        load_pretrained(build_model("resnet18", 3, 2, 16), "resnet18", vit, "vit.pth")


def test_safetensors_and_bad_files(tmp_path):
    model = MODELS.get("smallcnn")(in_channels=1, num_classes=3, image_size=16, width=8)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    header, blobs, off = {}, [], 0
    for k, v in sd.items():
        raw = v.numpy().tobytes()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[v.dtype]
        header[k] = {"dtype": dtype, "shape": list(v.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    got = read_state_dict(tmp_path / "m.safetensors")
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    (tmp_path / "bad.safetensors").write_bytes(b"\x01\x00")
    with pytest.raises(UserError, match=re.escape("bad.safetensors: not a valid .safetensors file")):
        read_state_dict(tmp_path / "bad.safetensors")
    torch.save({"epoch": 1, "args": {"lr": 0.1}}, tmp_path / "noweights.pth")
    with pytest.raises(UserError, match="expected a state dict of tensors"):
        read_state_dict(tmp_path / "noweights.pth")


def test_cli_uc_with_a_stock_resnet18_file_and_like_on_new_images(tmp_path, capsys):
    torch.save(tvm.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    src, new = npz(tmp_path / "fit.npz", n=16), npz(tmp_path / "new.npz", seed=5, n=6)
    flags = ["--clusters", "2", "--epochs", "1", "--batch-size", "8", "-p", "gen_width=8", "--surrogate",
             "resnet18", "--surrogate-weights", str(tmp_path / "resnet18.pth")]
    code, _, err = run_cli(["protect", str(src), "-m", "uc", *flags, "-o", str(tmp_path / "out")], capsys)
    assert code == 0, err
    sur = json.loads((tmp_path / "out" / "manifest.json").read_text())["fit"]["surrogate"]
    assert (sur["source"], sur["matched"], sur["missing"], sur["unexpected"], sur["mismatched_shape"],
            sur["head"]) == ("weights", 120, 0, 0, 0, 2)
    like = ["--like", str(tmp_path / "out"), "--key", str(tmp_path / "out.key")]
    code, _, err = run_cli(["protect", str(new), *like, "-o", str(tmp_path / "new")], capsys)
    assert code == 0, err
    reused = json.loads((tmp_path / "new" / "manifest.json").read_text())["reused"]
    assert reused["assigned_to_nearest_centre"] == 6 and sum(reused["cluster_sizes"]) == 6
    torch.save(tvm.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")  # other weights, same path
    code, _, err = run_cli(["protect", str(new), *like, "-o", str(tmp_path / "again")], capsys)
    assert code == 2 and "resnet18.pth: the surrogate weights file the clusters were fitted with is missing or " \
        "has changed" in err and not (tmp_path / "again").exists()
    mb = tmp_path / "mobilenet.pth"
    torch.save(tvm.mobilenet_v2(weights=None).state_dict(), mb)
    flags[-1] = str(mb)
    code, _, err = run_cli(["protect", str(src), "-m", "uc", *flags, "-o", str(tmp_path / "wrong")], capsys)
    assert code == 2 and err.strip().endswith("looks like a torchvision mobilenet_v2 state dict; pass --surrogate "
                                              "mobilenetv2") and not (tmp_path / "wrong").exists()
