from __future__ import annotations

import math

import pytest
import torch

from unlearnable.data.quality import l2, linf, perturbation_stats, psnr, ssim


def test_psnr_linf_l2_match_hand_computed_values():
    a = torch.zeros(1, 1, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[0, 0, 0, 0] = 51  # 0.2 in [0,1] units on one of 16 pixels
    assert math.isclose(float(linf(a, b)), 0.2, rel_tol=1e-6)
    assert math.isclose(float(l2(a, b)), 0.2, rel_tol=1e-6)
    mse = 0.04 / 16
    assert math.isclose(float(psnr(a, b)), 10 * math.log10(1 / mse), rel_tol=1e-5)
    assert math.isinf(float(psnr(a, a)))


def test_ssim_is_one_for_identical_and_lower_for_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 32, 32), generator=g, dtype=torch.uint8)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    noisy = (x.int() + torch.randint(-40, 41, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    assert (ssim(x, noisy) < 0.99).all()
    s = perturbation_stats(x, noisy)
    assert s["linf_max"] <= 40 / 255 + 1e-6 and s["changed_fraction"] == 1.0


def test_ssim_of_flat_images_is_the_luminance_term():
    x = torch.full((1, 1, 16, 16), 0.5)
    y = torch.full((1, 1, 16, 16), 0.6)
    c1 = 0.01**2
    want = (2 * 0.5 * 0.6 + c1) / (0.5**2 + 0.6**2 + c1)  # contrast/structure terms are 1 for flat images
    assert math.isclose(float(ssim(x, y)), want, rel_tol=1e-4)


def test_streamed_stats_merge_to_the_whole_batch_and_match_the_float64_formulas():
    import math

    from unlearnable.audit.metrics import PerturbationStats, l2, linf, perturbation_stats, psnr

    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (10, 3, 16, 16), generator=g, dtype=torch.uint8)
    b = (a.int() + torch.randint(-6, 7, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    b[3] = a[3]  # one unchanged image
    whole = perturbation_stats(a, b)
    acc, part = PerturbationStats(), PerturbationStats()
    acc.update(a[:4], b[:4])
    part.update(a[4:], b[4:])
    acc += part
    merged = acc.result()
    for k, v in whole.items():
        assert math.isclose(merged[k], v, rel_tol=1e-9, abs_tol=1e-12), k
    keep = [i for i in range(10) if i != 3]
    assert math.isclose(whole["psnr_db"], float(psnr(a[keep], b[keep]).mean()), rel_tol=1e-9)
    assert math.isclose(whole["linf_max"], float(linf(a, b).max()), rel_tol=1e-12)
    assert math.isclose(whole["l2_mean"], float(l2(a, b).mean()), rel_tol=1e-9)
    assert whole["changed_fraction"] == 0.9


# up to 64 px: filtered by matrix products; above: by convolutions; non-square images in both
@pytest.mark.parametrize("c,h,w", [(1, 28, 28), (3, 28, 28), (3, 20, 36), (3, 80, 80), (1, 72, 96)])
def test_ssim_matches_scikit_image_gaussian_ssim(c, h, w):
    """The reference implementation with the paper's settings (Gaussian 11/1.5, population covariance)."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(c * h + w)
    x = torch.randint(0, 256, (3, c, h, w), generator=g, dtype=torch.uint8)
    y = (x.int() + torch.randint(-30, 31, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    got = ssim(x, y)
    for i in range(3):
        want = structural_similarity(x[i].numpy() / 255.0, y[i].numpy() / 255.0, data_range=1.0, channel_axis=0,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert math.isclose(float(got[i]), want, abs_tol=2e-5), (i, float(got[i]), want)


def test_ssim_on_a_sample_is_the_mean_over_the_sampled_images_and_the_distances_stay_exact():
    from unlearnable.data.quality import PerturbationStats

    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 256, (10, 3, 24, 24), generator=g, dtype=torch.uint8)
    b = (a.int() + torch.randint(-9, 10, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    b[4] = a[4]  # an unchanged image inside the sample: SSIM 1 without measuring
    rows = torch.zeros(10, dtype=torch.bool)
    rows[[0, 4, 7]] = True
    acc = PerturbationStats()
    acc.update(a, b, chunk=3, ssim_rows=rows)  # the sample spans chunks
    got, whole = acc.result(), perturbation_stats(a, b)
    assert got["ssim_images"] == 3 and whole["ssim_images"] == 10 and whole["ssim_se"] == 0.0
    vals = torch.cat([ssim(a[[0, 7]], b[[0, 7]]).double(), torch.ones(1, dtype=torch.float64)])
    assert math.isclose(got["ssim"], float(vals.mean()), rel_tol=1e-6)
    # the standard error of a sample of 3 from 10, without replacement
    assert math.isclose(got["ssim_se"], float(vals.std() / math.sqrt(3) * math.sqrt(1 - 3 / 10)), rel_tol=1e-6)
    assert not math.isclose(got["ssim"], whole["ssim"], rel_tol=1e-4)  # it really is a different mean
    for k in ("psnr_db", "linf_max", "linf_mean", "l2_mean", "changed_fraction"):
        assert math.isclose(got[k], whole[k], rel_tol=1e-12), k


def test_distances_of_large_images_match_float64_to_float32_precision():
    g = torch.Generator().manual_seed(2)
    a = torch.randint(0, 256, (2, 3, 224, 224), generator=g, dtype=torch.uint8)
    b = (a.int() + torch.randint(-8, 9, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    s = perturbation_stats(a, b)
    assert math.isclose(s["psnr_db"], float(psnr(a, b).mean()), rel_tol=1e-6)
    assert math.isclose(s["l2_mean"], float(l2(a, b).mean()), rel_tol=1e-6)
    assert math.isclose(s["linf_max"], float(linf(a, b).max()), rel_tol=1e-12) and s["linf_max"] * 255 == 8


def test_distances_do_not_depend_on_the_memory_layout_of_either_batch():
    g = torch.Generator().manual_seed(3)
    a = torch.randint(0, 256, (3, 3, 20, 20), generator=g, dtype=torch.uint8)
    b = (a.int() + torch.randint(-5, 6, a.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    b[1, 2, 3, 4] = 255 - a[1, 2, 3, 4]  # one large change, so L-inf depends on pairing the right pixels
    want = perturbation_stats(a.contiguous(), b.contiguous())
    cl = torch.channels_last
    for x, y in ((a.contiguous(memory_format=cl), b), (a, b.contiguous(memory_format=cl)),
                 (a.contiguous(memory_format=cl), b.contiguous(memory_format=cl))):
        got = perturbation_stats(x, y)
        for k in ("psnr_db", "linf_max", "l2_mean", "ssim"):
            assert math.isclose(got[k], want[k], rel_tol=1e-6), k
