"""``audit-seg``: both models trained with one recipe, scored on held-out clean subjects; results and figure."""

from __future__ import annotations

import json

from tests.forget.conftest import exit_code
from tests.protect3d.conftest import TINY

TRAIN = ["--model", "resnet10", "--width", "4", "--patch", "16", "--epochs", "1", "--device", "cpu"]


def test_audit_seg_writes_results_and_figure(tmp_path, capsys) -> None:
    prot = tmp_path / "prot"
    assert exit_code(["protect", TINY, "--method", "noise3d", "--out", str(prot)]) == 0
    out = tmp_path / "audit"
    assert exit_code(["audit-seg", "--protected", str(prot), "--clean", TINY, "--out", str(out), *TRAIN,
                      "--defense", "none,aug"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert set(r["runs"]) == {"none", "aug"} and r["method"] == "noise3d"
    assert set(r["test_ids"]) == {s for s, sp in json.loads((prot / "manifest.json").read_text())["splits"].items()
                                  if sp == "test"}
    for run in r["runs"].values():
        for name in ("clean", "protected"):
            assert 0 <= run[name]["dice"] <= 1 and 0 <= run[name]["mae"] <= 1
    assert (out / "audit_seg.png").stat().st_size > 1000 and "| none |" in (out / "report.md").read_text()
    # how much a voxel's own intensity gives away, beside the Dice table (protect3d/cues.py)
    cues = r["intensity_cues"]
    assert 0 <= cues["rule_dice"] <= 1 and cues["reference_dice"] == round(r["runs"]["none"]["clean"]["dice"], 4)
    assert cues["budget_levels"] == round(r["eps"] * 255, 2) and 0 <= cues["near"] <= 1
    assert cues["summary"][1:] in (out / "report.md").read_text()
    # bad input: one line, exit 2, nothing written
    bad = tmp_path / "bad"
    (tmp_path / "empty").mkdir()
    for args, needle in ((["--protected", str(tmp_path / "empty"), "--clean", TINY], "manifest.json"),
                         (["--protected", str(prot), "--clean", "brain-phantoms:n=5,size=16"], "not in both"),
                         (["--protected", str(prot), "--clean", TINY, "--defense", "augg"], "did you mean")):
        capsys.readouterr()
        assert exit_code(["audit-seg", *args, "--out", str(bad), *TRAIN]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
        assert not bad.exists()


def test_augment3d_flips_inputs_and_undoes_them_on_the_logits() -> None:
    import torch

    from unlearnable.segment.augment import Augment3d, gaussian_blur3d

    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 3, 3, padding=1)
    x = torch.rand(2, 1, 8, 8, 8)
    aug = Augment3d(net, flip=1.0, shift=0.0, scale=0.0, smooth=0.0)
    dims = [2, 3, 4]
    assert torch.allclose(aug.train()(x), net(x.flip(dims)).flip(dims), atol=1e-6)  # = training on flipped (x, y)
    assert torch.equal(aug.eval()(x), net(x))  # evaluation is never augmented
    const = torch.full((1, 2, 6, 6, 6), 0.3)
    assert torch.allclose(gaussian_blur3d(const, 1.0), const, atol=1e-6)
    spike = torch.zeros(1, 1, 9, 9, 9)
    spike[0, 0, 4, 4, 4] = 1.0
    blurred = gaussian_blur3d(spike, 1.0)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5 and float(blurred.max()) < 0.2
