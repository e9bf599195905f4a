"""Our PSNR/SSIM (data/quality.py) against scikit-image's on real photographs, grey and colour.

scikit-image is the reference: ``structural_similarity`` with a Gaussian window of sigma 1.5 (11 taps at its
default truncation), population covariances and the image border of half a window left out is Wang et al.'s SSIM,
the setting data/quality.py implements. The speed comparison is in bench/quality.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnable.data.quality import psnr, ssim

skdata = pytest.importorskip("skimage.data")
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402

PSNR_TOL_DB = 1e-9  # both in float64
SSIM_TOL = 1e-5  # ours accumulates the moments in float32 (measured: < 2e-6 on these photographs)


def _perturbed(img: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """A protection-like change of ``img``: +-8 grey levels of noise, or a smooth +-16 level pattern."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        delta = rng.integers(-8, 9, img.shape)
    else:
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
        delta = np.round(16 * np.sin(xx / 7.0) * np.cos(yy / 11.0)).astype(int)
        delta = delta[..., None] if img.ndim == 3 else delta
    return np.clip(img.astype(int) + delta, 0, 255).astype(np.uint8)


def _tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W[, C]) uint8 -> (1, C, H, W)."""
    t = torch.from_numpy(img)
    return (t[None] if t.ndim == 2 else t.permute(2, 0, 1))[None]


@pytest.mark.parametrize("name", ["camera", "moon", "astronaut", "coffee"])
@pytest.mark.parametrize("kind", ["noise", "pattern"])
def test_psnr_and_ssim_match_scikit_image(name, kind):
    img = getattr(skdata, name)()[100:292, 150:342]  # a 192 x 192 crop keeps the test fast on a shared machine
    out = _perturbed(img, kind)
    colour = {"channel_axis": 2} if img.ndim == 3 else {}
    ref_psnr = peak_signal_noise_ratio(img, out, data_range=255)
    ref_ssim = structural_similarity(img, out, data_range=255, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, **colour)
    a, b = _tensor(img), _tensor(out)
    assert float(psnr(a, b)[0]) == pytest.approx(ref_psnr, abs=PSNR_TOL_DB)
    assert float(ssim(a, b)[0]) == pytest.approx(ref_ssim, abs=SSIM_TOL)
    assert float(ssim(a, a)[0]) == pytest.approx(1.0, abs=1e-6)


def test_a_batch_scores_each_image_like_one_at_a_time():
    imgs = [skdata.camera()[:160, :160], skdata.moon()[:160, :160]]
    outs = [_perturbed(i, "noise", s) for s, i in enumerate(imgs)]
    a, b = torch.cat([_tensor(i) for i in imgs]), torch.cat([_tensor(o) for o in outs])
    ref = [structural_similarity(i, o, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
           for i, o in zip(imgs, outs)]
    assert ssim(a, b).tolist() == pytest.approx(ref, abs=SSIM_TOL)
