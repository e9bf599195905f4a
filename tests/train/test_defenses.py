"""Training-time defences: parsing, and each transform doing what it says."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _efficacy import single_thread  # noqa: F401
from unlearnable.errors import UserError
from unlearnable.models import build_model
from unlearnable.train.defenses import DEFENSES, cutmix, cutout, mixup, parse_defense, pgd_attack
from unlearnable.train.loop import Recipe


def _images(n: int = 6, c: int = 3, size: int = 16) -> torch.Tensor:
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


def test_parse_positional_and_keyword_arguments():
    assert parse_defense("jpeg:10").params.quality == 10
    at = parse_defense("at:l2:0.5:steps=3")
    assert (at.params.norm, at.params.eps, at.params.steps) == ("l2", 0.5, 3)
    assert parse_defense("at:linf:8/255").params.eps == pytest.approx(8 / 255)
    assert parse_defense("finetune:pre_epochs=2:lr_scale=0.5").params.lr_scale == 0.5
    assert parse_defense("grayscale").spec == "grayscale"


@pytest.mark.parametrize("spec,msg", [("jpg", "did you mean 'jpeg'"), ("jpeg:abc", "not a number"),
                                      ("jpeg:500", "1..100"), ("jpeg:10:20", "too many"),
                                      ("at:linf:8/255:stepz=3", "did you mean 'steps'"), ("at:l1", "linf or l2"),
                                      ("blur:0", "sigma"), ("rrc:0", "scale"), ("rrc:ratio=9", "ratio")])
def test_parse_errors(spec, msg):
    with pytest.raises(UserError, match=msg):
        parse_defense(spec)


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defence_keeps_the_data_contract(name):
    """Each registered defence parses by its bare name, says what it does, and keeps images and batches well-formed:
    the transform is deterministic, same shape and dtype, input untouched; a batch hook keeps shapes and gives
    targets a loss can use."""
    d = parse_defense(name)
    assert d.spec == name and d.summary.strip() and "\n" not in d.summary
    x = _images()
    before = x.clone()
    out = d.transform(x)
    assert out.shape == x.shape and out.dtype == torch.uint8 and torch.equal(x, before)
    assert torch.equal(out, d.transform(x))
    hook = d.hook(4)
    if hook is not None:
        torch.manual_seed(0)
        model = build_model("smallcnn", 3, 4, 16)
        xb, yb = x.float() / 255, torch.arange(6) % 4
        hx, ht = hook(xb, yb, model)
        assert hx.shape == xb.shape and hx.is_floating_point() and torch.equal(xb, before.float() / 255)
        assert ht.shape[0] == 6 and torch.isfinite(F.cross_entropy(model(hx), ht))
    assert d.recipe(Recipe()) is not None


def test_jpeg_changes_pixels_and_is_deterministic():
    x = _images()
    d = parse_defense("jpeg:10")
    a, b = d.transform(x), d.transform(x)
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert not torch.equal(parse_defense("jpeg:10").transform(x[:, :1]), x[:, :1])  # grey images too


def test_grayscale_gives_equal_channels():
    g = parse_defense("grayscale").transform(_images())
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    grey = _images(c=1)
    assert torch.equal(parse_defense("grayscale").transform(grey), grey)


def test_iss_is_grayscale_then_jpeg():
    x = _images()
    out = parse_defense("iss:10").transform(x)
    assert torch.equal(out[:, 0], out[:, 1]) or (out[:, 0].int() - out[:, 1].int()).abs().max() <= 2
    assert not torch.equal(out, parse_defense("grayscale").transform(x))


def test_blur_smooths_and_keeps_constants():
    x = _images()
    y = parse_defense("blur:1.5").transform(x)
    assert y.shape == x.shape and y.float().var() < 0.5 * x.float().var()
    flat = torch.full((2, 1, 9, 9), 77, dtype=torch.uint8)
    assert torch.equal(parse_defense("blur:1").transform(flat), flat)


def test_crop_flip_preserves_shape_and_content():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 12, 12)
    hook = parse_defense("aug:pad=0").hook(10)
    out, t = hook(x, torch.zeros(8, dtype=torch.long), None)
    assert out.shape == x.shape
    for i in range(8):  # no padding: every image is itself or its mirror
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    shifted, _ = parse_defense("aug:4:flip=false").hook(10)(x, t, None)
    assert shifted.shape == x.shape and not torch.equal(shifted, x)


def test_random_resized_crop_enlarges_a_box_of_the_image():
    from unlearnable.perturbation import random_resized_crop
    x = torch.rand(8, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(random_resized_crop(x, 1.0, 1.0, False, g), x, atol=1e-6)  # the whole image: itself
    # columns numbered 0..15: a crop of area a is an enlargement by 1/sqrt(a), so neighbouring output columns step
    # by less than one input column, and stay inside the image
    cols = torch.arange(16.).expand(4, 1, 16, 16).contiguous()
    out = random_resized_crop(cols, 0.25, 1.0, False, torch.Generator().manual_seed(1))
    steps = out[:, 0, 8].diff(dim=-1)
    assert bool((steps > 0).all()) and float(steps.max()) <= 1.0 + 1e-5
    assert float(out.min()) >= 0 and float(out.max()) <= 15
    a = random_resized_crop(x, 0.08, g=torch.Generator().manual_seed(3))
    assert torch.equal(a, random_resized_crop(x, 0.08, g=torch.Generator().manual_seed(3)))  # keyed draws repeat
    assert parse_defense("rrc:0.35").params.scale == 0.35


def test_cutout_zeroes_one_square():
    torch.manual_seed(0)
    x = torch.ones(16, 1, 12, 12)
    out = cutout(x, 4)
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() <= 16 and zeros.min() >= 4  # a 4x4 square, clipped at the border at most to 2x2
    assert parse_defense("cutout").hook(10)(x, None, None)[0].shape == x.shape


def test_mixup_and_cutmix_targets_sum_to_one():
    torch.manual_seed(0)
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    for fn in (mixup, cutmix):
        xm, t = fn(x, y, 4, 1.0)
        assert xm.shape == x.shape and t.shape == (8, 4)
        torch.testing.assert_close(t.sum(1), torch.ones(8))
        assert (t >= 0).all()
    # cutmix: the target weight of the original label equals the share of its own pixels
    torch.manual_seed(1)
    x = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 16, 16).contiguous()
    xm, t = cutmix(x, torch.arange(8), 8, 1.0)
    own = (xm == x).flatten(1).float().mean(1)
    moved = t.argmax(1) != torch.arange(8)
    torch.testing.assert_close(torch.where(moved, 1 - t.max(1).values, t.max(1).values), own)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_adversarial_training_perturbation_within_eps(norm, eps):
    torch.manual_seed(0)
    model = build_model("smallcnn", 1, 3, 16)
    x, y = torch.rand(6, 1, 16, 16), torch.arange(6) % 3
    adv = pgd_attack(model, x, y, eps, norm, steps=3, alpha=2.5 * eps / 3)
    d = adv - x
    size = d.abs().flatten(1).amax(1) if norm == "linf" else d.flatten(1).norm(dim=1)
    assert size.max() <= eps + 1e-5 and adv.min() >= 0 and adv.max() <= 1
    model.eval()
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)
    assert model.training is False  # restored to the mode it had
    hook = parse_defense(f"at:{norm}:{eps}:steps=2").hook(3)
    assert hook(x, y, model)[0].shape == x.shape


def test_finetune_starts_from_one_cached_clean_model():
    d = parse_defense("finetune:pre_epochs=1:lr_scale=0.5")
    r = Recipe(model="smallcnn", epochs=1, batch_size=8, lr=0.1)
    assert d.recipe(r).lr == pytest.approx(0.05)
    x, y = _images(n=8, c=1), torch.arange(8) % 2
    a = d.start_model(x, y, 2, r, "cpu")
    b = d.start_model(x, y, 2, r, "cpu")
    assert a is not b  # a copy per victim ...
    for pa, pb in zip(a.parameters(), b.parameters()):  # ... of the same pre-trained weights
        assert torch.equal(pa, pb)
    torch.manual_seed(0)
    fresh = build_model("smallcnn", 1, 2, 16)
    assert not torch.equal(next(a.parameters()), next(fresh.parameters()))
