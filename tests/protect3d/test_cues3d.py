"""The intensity-cue check of ``audit-seg`` (unlearnable.protect3d.cues): how well a voxel's own intensity reads its
label, and which voxels a budget can carry across that rule's boundaries."""

from __future__ import annotations

import pytest
import torch

from unlearnable.data.subjects import SubjectSet
from unlearnable.protect3d.cues import _neighbours_differ, describe, intensity_cues, levels_per_modality


def make_subjects(levels: list[int], n: int = 4, channels: int = 1, noise: float = 0.0, seed: int = 0) -> SubjectSet:
    """``n`` 8^3 subjects: label k fills slab k along the first axis at grey level ``levels[k]`` (+ noise)."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(8, 8, 8, dtype=torch.long)
    for k in range(len(levels)):
        lab[k * 8 // len(levels):(k + 1) * 8 // len(levels)] = k
    base = torch.tensor(levels, dtype=torch.float32)[lab]
    imgs = torch.stack([(base + noise * torch.randn(channels, 8, 8, 8, generator=g)).round().clamp(0, 255)
                        for _ in range(n)]).to(torch.uint8)
    return SubjectSet(images=imgs, labels=lab.expand(n, -1, -1, -1).clone(), ids=tuple(f"s{i}" for i in range(n)),
                      classes=tuple(f"c{k}" for k in range(len(levels))), scored=tuple(range(1, len(levels))),
                      modalities=tuple(f"m{c}" for c in range(channels)))


def test_labels_named_by_intensity_give_a_perfect_rule_and_no_voxel_near_a_boundary():
    s = make_subjects([0, 80, 160, 240])
    c = intensity_cues(s, [0, 1], s.subset([2, 3]), eps=8 / 255, reference_dice=0.8)
    assert c["rule_dice"] == 1.0 and c["near"] == 0.0 and c["budget_levels"] == pytest.approx(8)
    assert c["rule_share"] == pytest.approx(1.25) and c["cells_seen"] == 4
    assert c["per_label"] == [{"label": f"c{k}", "dice": 1.0} for k in (1, 2, 3)]
    assert "Dice 1.000" in c["summary"] and "125% of the clean-trained segmenter's 0.800" in c["summary"]


def test_labels_intensity_does_not_name_score_low_and_close_levels_are_near():
    same = make_subjects([100, 100, 100, 100], noise=5)  # every label at one level: intensity names nothing
    c = intensity_cues(same, [0, 1], same.subset([2, 3]), eps=8 / 255)
    assert c["rule_dice"] < 0.3 and "reference_dice" not in c
    close = make_subjects([0, 100, 110, 240])  # 10 levels apart: within 2 x 8 of each other's boundary
    c = intensity_cues(close, [0, 1], close.subset([2, 3]), eps=8 / 255)
    assert c["rule_dice"] == 1.0 and c["near"] == pytest.approx(2 / 3, abs=1e-4)  # labels 1 and 2 of 3 scored
    assert intensity_cues(close, [0, 1], close.subset([2, 3]), eps=4 / 255)["near"] == 0.0  # 4 < the 5-level gap
    assert "near" not in intensity_cues(close, [0, 1], close.subset([2, 3]))


def test_several_modalities_share_one_table_of_at_most_4096_cells():
    assert levels_per_modality(1) == 256 and levels_per_modality(3) == 16 and levels_per_modality(2) == 64
    s = make_subjects([0, 80, 160, 240], channels=3)
    c = intensity_cues(s, [0, 1], s.subset([2, 3]), eps=8 / 255)
    assert c["rule_dice"] == 1.0 and "16 levels per modality" in c["rule"]


def test_neighbours_within_reach():
    table = torch.tensor([0, 0, 0, 1, 1, 1])
    assert _neighbours_differ(table, 6, 1, 1).tolist() == [False, False, True, True, False, False]
    assert _neighbours_differ(table, 6, 1, 2).tolist() == [False, True, True, True, True, False]


def test_describe_without_budget_or_reference():
    text = describe({"rule_dice": 0.5})
    assert text == "a voxel-wise intensity rule alone scores Dice 0.500 on the held-out subjects"


def test_cues_command_on_subjects(tmp_path, capsys):
    """``unlearnable cues SUBJECTS``: the table on the split protect would make, per label, with --json."""
    import json

    from helpers import run_cli
    out = tmp_path / "c.json"
    code, stdout, err = run_cli(["cues", "brain-phantoms:n=6,size=16", "--test-fraction", "0.34", "--json",
                                 str(out)], capsys)
    assert code == 0, err
    c = json.loads(out.read_text())
    assert [r["label"] for r in c["per_label"]] == ["csf", "gm", "wm"] and 0 < c["rule_dice"] <= 1
    assert c["budget_levels"] == pytest.approx(8) and "Dice from intensity alone" in stdout
    code, _, err = run_cli(["cues", "brain-phantoms:n=4,size=16", "--test-fraction", "0"], capsys)
    assert code == 2 and "needs training and held-out subjects" in err and err.count("\n") == 1
