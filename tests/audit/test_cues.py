"""The colour-cue check: which classes each image's own colour statistics name, and whether a budget can close the
gap between their mean colours (unlearnable.audit.cues)."""

from __future__ import annotations

import re

import pytest
import torch

from unlearnable.audit.cues import colour_cues, colour_features, describe
from unlearnable.data import ImageSet


def make_set(levels: list[float], n: int = 60, channels: int = 1, pattern_classes: bool = True) -> ImageSet:
    """One class per entry of ``levels`` (the class's mean grey level), ``n`` train and ``n`` test images each, with
    i.i.d. noise of std 10 levels; images of equal level differ only in noise, so colour cannot tell them apart."""
    g = torch.Generator().manual_seed(0)
    imgs, labels, splits = [], [], []
    for k, lv in enumerate(levels):
        for split in ("train", "test"):
            x = lv + 10 * torch.randn(n, channels, 8, 8, generator=g)
            imgs.append(x.round().clamp(0, 255).to(torch.uint8))
            labels += [k] * n
            splits += [split] * n
    images = torch.cat(imgs)
    return ImageSet(images=images, labels=torch.tensor(labels), ids=tuple(f"s{i}" for i in range(len(labels))),
                    splits=tuple(splits), classes=tuple(f"c{k}" for k in range(len(levels))))


def test_features_are_each_channels_mean_and_std_then_a_colour_histogram():
    grey = torch.tensor([[[[0, 10], [20, 250]]]], dtype=torch.uint8)
    f = colour_features(grey, chunk=1)
    assert f.shape == (1, 2 + 16)
    assert f[0, :2].tolist() == pytest.approx([70.0, float(torch.tensor([0., 10, 20, 250]).std(correction=0))])
    assert f[0, 2:].tolist() == [0.5, 0.25] + [0.0] * 13 + [0.25]  # 16 grey cells of 16 levels: 0,10 | 20 | 250
    rgb = torch.zeros(2, 3, 2, 2, dtype=torch.uint8)
    rgb[1, 0] = 255  # the second image is pure red
    f = colour_features(rgb, chunk=1)
    assert f.shape == (2, 6 + 64) and f[0, 6] == 1.0 and f[1, 6 + 3 * 16] == 1.0  # cell (r, g, b) = r*16 + g*4 + b
    assert f[1, :3].tolist() == [255.0, 0.0, 0.0]
    assert torch.equal(colour_features(rgb, torch.tensor([1])), f[1:])  # a subset by index, never copied whole
    big = torch.zeros(1, 1, 256, 256, dtype=torch.uint8)
    big[..., ::4, ::4] = 200  # a large image is read on a grid of every 4th row and column: exactly these pixels
    assert colour_features(big)[0, 0] == 200.0 and colour_features(big[..., :64, :64])[0, 0] == 200.0 / 16


def test_a_class_apart_in_brightness_is_named_and_equal_ones_are_not():
    ds = make_set([200, 100, 100, 100])
    c = colour_cues(ds, "test", eps=8 / 255)
    assert c["named"] == ["c0"] and c["cue"] == "brightness" and c["chance"] == 0.25
    rows = {r["class"]: r for r in c["per_class"]}
    assert rows["c0"]["recall"] == 1.0 and rows["c0"]["gap_levels"] == pytest.approx(100, abs=3)
    assert rows["c0"]["nearest"] in ("c1", "c2", "c3") and rows["c1"]["gap_levels"] < 5
    assert rows["c0"]["mean_colour"][0] == pytest.approx(200, abs=2)
    assert 0.4 < c["acc"] < 0.65  # c0 always, c1-c3 a three-way toss
    assert c["apart_beyond_budget"] == ["c0"] and c["budget_levels"] == pytest.approx(8)
    text = describe(c)
    assert text.startswith("the images' own brightness alone tells apart c0 (")
    assert "more than twice the budget (8 levels)" in text


def test_the_budget_decides_which_named_classes_stay_apart():
    """Two classes 12 levels apart in mean: both moved by 8 levels could meet (2 x 8 > 12), by 4 they cannot."""
    ds = make_set([100, 112], n=200)
    ds = ds.with_images((ds.images.float() - ds.images.float().mean((1, 2, 3), keepdim=True)
                         + torch.tensor([100.0, 112.0])[ds.labels][:, None, None, None]).round().to(torch.uint8))
    assert colour_cues(ds, "test", eps=8 / 255)["apart_beyond_budget"] == []
    c = colour_cues(ds, "test", eps=4 / 255)
    assert c["named"] == ["c0", "c1"] and c["apart_beyond_budget"] == ["c0", "c1"]
    assert "eps" not in c and "apart_beyond_budget" not in colour_cues(ds, "test")
    assert "budget_levels" not in colour_cues(ds, "test", 0.0)  # an unbudgeted method (eps 0) states no budget


def test_colour_names_rgb_classes_and_nothing_when_colours_match():
    red = make_set([100, 100, 100, 100], channels=3)
    x = red.images.clone()
    x[red.labels == 0, 0] = (x[red.labels == 0, 0].int() + 60).clamp(0, 255).to(torch.uint8)  # class 0: redder
    c = colour_cues(red.with_images(x), "test", eps=8 / 255)
    assert c["named"] == ["c0"] and c["cue"] == "colour" and len(c["per_class"][0]["mean_colour"]) == 3
    same = colour_cues(red, "test", eps=8 / 255)
    assert same["named"] == [] and same["apart_beyond_budget"] == [] and describe(same) is None


def test_two_classes_need_a_strong_cue_to_be_named():
    weak = make_set([100, 101], n=200)  # image means 1 level apart, their noise 1.25: a lean, not a name
    c = colour_cues(weak, "test")
    assert c["named_above"] == 0.75 and c["named"] == [] and c["acc"] < 0.75
    assert colour_cues(make_set([100, 200]), "test")["named"] == ["c0", "c1"]


def test_deterministic():
    ds = make_set([200, 100, 150, 100])
    assert colour_cues(ds, "test", 8 / 255) == colour_cues(ds, "test", 8 / 255)


def test_cues_command_prints_the_table_and_writes_json(tmp_path, capsys):
    import json

    from helpers import run_cli
    out = tmp_path / "cues.json"
    code, stdout, err = run_cli(["cues", "mni-tissue:n=240,test=120", "--json", str(out)], capsys)
    assert code == 0, err
    c = json.loads(out.read_text())
    assert c["cue"] == "brightness" and c["budget_levels"] == pytest.approx(8) and "wm" in c["named"]
    assert "recall" in stdout and "gap (levels)" in stdout and c["summary"] in " ".join(stdout.split())
    assert "expect a victim trained on a protection within 8/255 to keep some of these classes" in stdout
    code, stdout, err = run_cli(["cues", "textures:n=200,test=100,grey=1,normalise=1"], capsys)
    assert code == 0, err
    assert ("tells no class apart" in stdout) == ("expect a victim" not in stdout)
    for args, needle in ((["--eps", "0"], "--eps 0"), (["--eps", "x"], "--eps")):
        code, _, err = run_cli(["cues", "mni-tissue:n=240,test=120", *args], capsys)
        assert code == 2 and needle in err and err.count("\n") == 1
    code, _, err = run_cli(["cues", str(tmp_path / "missing")], capsys)
    assert code == 2 and "missing" in err


def test_many_named_classes_make_one_readable_sentence():
    """24 classes that brightness names, 10 levels apart: the sentence lists ten and says how many more, the
    result keeps them all (a 102- or 1,000-class dataset wrote a log line of hundreds of names)."""
    from unlearnable.log import SHOWN, name_list

    c = colour_cues(make_set([5 + 10 * k for k in range(24)], n=40), "test", eps=2 / 255)
    assert len(c["named"]) > SHOWN and len(c["apart_beyond_budget"]) > SHOWN
    text = describe(c)
    assert f"and {len(c['named']) - SHOWN} more (a linear" in text and f"{c['named'][SHOWN]}," not in text
    assert len(re.findall(r"and \d+ more", text)) == 3 and len(text) < 600  # named, apart, and their gaps
    assert name_list(["a", "b"]) == "a, b" and name_list(list("abc"), 2) == "a, b and 1 more"
    assert name_list([]) == "" and name_list(range(3)) == "0, 1, 2"
