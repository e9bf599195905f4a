"""``slice-freq``: class-wise, band-limited, slice-alternating perturbation, in the spirit of VoxShield (Liu et
al., 2026: inter-slice frequency disruption for 3D segmentation).

Each label class k carries a square wave in the slice plane, ``eps * sign(cos(2 pi f_k <u_k, (a, b)> + phi_k))``,
whose frequency ``f_k`` lies in the band ``[band_lo, band_hi]`` cycles/voxel and whose orientation ``u_k`` differs
from class to class (evenly spread over 180 degrees; offset, frequencies and phases drawn from the key). A voxel at
slice z with label k gets its class's wave times ``s(z) = (-1)^z`` when ``alternate`` (the highest inter-slice
frequency: neighbouring slices disagree, which 3D convolutions see and clean scans never show).

Why orientation per class: a segmenter is translation-equivariant, so a class-wise shortcut must be *locally*
recognisable. Patterns that differ only as random draws of the same texture (``noise3d``'s tiles, or band-passed
noise) look alike through a 3x3x3 window and were measured to do nothing; an oriented wave tells its class from
any small patch. With ``steps > 0`` the waves are then optimised as class-wise error-minimising noise against the
3D surrogate (min-min, :mod:`.surrogate`), projected back onto the band and the budget after every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data.subjectset import SubjectSet
from ..errors import UserError
from ..log import log
from ..protect.keys import Key
from ..runtime.distributed import all_reduce_sum, shard_indices
from .base import VOLUME_METHODS, VolumeProtection, by_label, check_eps
from .surrogate import Surrogate, SurrogateParams, patch_grid, perturbed

CHECKPOINT = "slice-freq.pt"


def bandpass(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Keep the radial frequencies in ``[lo, hi]`` (cycles/voxel) of the last two axes of ``x`` ``(..., A, B)``."""
    a, b = x.shape[-2:]
    fa = torch.fft.fftfreq(a)[:, None]
    fb = torch.fft.rfftfreq(b)[None, :]
    r = (fa**2 + fb**2).sqrt()
    mask = ((r >= lo) & (r <= hi)).to(x.dtype)
    return torch.fft.irfft2(torch.fft.rfft2(x) * mask, s=(a, b))


@dataclass(frozen=True)
class SlicePatterns:
    """Patterns ``(K, C, A, B)`` in the plane orthogonal to ``axis`` (model units), and the fit's report."""

    patterns: torch.Tensor
    axis: int
    alternate: bool
    report: dict[str, Any] = field(default_factory=dict)


@VOLUME_METHODS.register("slice-freq")
class SliceFrequency(VolumeProtection):
    """Class-wise band-limited patterns that alternate in sign across slices (VoxShield-style), optionally optimised
    against a 3D surrogate."""

    summary = "class-wise oriented in-band waves alternating across slices (VoxShield-style), optionally optimised"
    test_params = {"steps": 1, "rounds": 1, "epochs": 1, "patch": 16, "width": 4}

    @dataclass(frozen=True)
    class Params(SurrogateParams):  # surrogate, width, patch, batch_size, lr, epochs (per round, when steps > 0)
        eps: float = 8 / 255
        band_lo: float = 0.15  # band of the in-plane wave frequency, cycles/voxel (0.5 = Nyquist)
        band_hi: float = 0.35
        axis: int = 2  # slice axis among (D, H, W) = the file's voxel axes (i, j, k); 2 = axial for RAS-like data
        alternate: bool = True  # sign flips from one slice to the next
        steps: int = 0  # descent steps on the patterns per round (0: model-free, drawn from the key only)
        rounds: int = 3
        step_size: float = 0.0  # 0 -> eps / 4

        def validate(self) -> None:
            check_eps(self.eps, SliceFrequency)
            if not 0 <= self.band_lo < self.band_hi <= 0.5:
                raise UserError(f"--param band_lo={self.band_lo}, band_hi={self.band_hi}: need 0 <= band_lo < "
                                "band_hi <= 0.5 (cycles/voxel)")
            if self.axis not in (0, 1, 2):
                raise UserError(f"--param axis={self.axis}: must be 0, 1 or 2")
            if self.steps < 0 or self.rounds < 1 or self.step_size < 0:
                raise UserError("--param steps >= 0, rounds >= 1 and step_size >= 0 are required")
            self.validate_surrogate()

    def _plane(self, shape: tuple[int, int, int]) -> tuple[int, int]:
        a, b = (s for j, s in enumerate(shape) if j != self.params.axis)
        return a, b

    def _project(self, pat: torch.Tensor) -> torch.Tensor:
        p = self.params
        return bandpass(pat, p.band_lo, p.band_hi).clamp(-p.eps, p.eps)

    def fit(self, train: SubjectSet, key: Key, work: Path | None = None) -> SlicePatterns:
        p = self.params
        pat = self.waves(train.num_classes, train.channels, self._plane(train.shape), key)
        report: dict[str, Any] = {}
        if p.steps:
            pat, report = self._optimise(train, key, pat, work)
        return SlicePatterns(pat, p.axis, p.alternate, report)

    def waves(self, k: int, c: int, plane: tuple[int, int], key: Key) -> torch.Tensor:
        """Class-wise square waves ``(K, C, A, B)`` at the budget: one orientation per class, frequency in the band."""
        p = self.params
        u = torch.rand((k, 3), generator=key.generator("slice-freq/waves"), dtype=torch.float64)
        theta = (torch.arange(k, dtype=torch.float64) + u[:, 0]) * math.pi / k
        freq = p.band_lo + (p.band_hi - p.band_lo) * u[:, 1]
        ia, ib = torch.meshgrid(torch.arange(plane[0], dtype=torch.float64),
                                torch.arange(plane[1], dtype=torch.float64), indexing="ij")
        arg = (theta.cos()[:, None, None] * ia + theta.sin()[:, None, None] * ib) * freq[:, None, None]
        wave = torch.cos(2 * math.pi * arg + 2 * math.pi * u[:, 2, None, None])
        sq = torch.where(wave >= 0, 1.0, -1.0).float() * p.eps
        return sq[:, None].expand(k, c, *plane).clone()

    def _volume(self, pat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``(C, D, H, W)`` perturbation of one subject from patterns ``(K, C, A, B)`` and its labels."""
        p = self.params
        n = labels.shape[p.axis]
        full = pat.unsqueeze(2 + p.axis)
        sign = torch.ones(n)
        if p.alternate:
            sign[1::2] = -1.0
        view = [1] * 5
        view[2 + p.axis] = n
        return by_label(full * sign.view(view), labels)

    def delta(self, state: SlicePatterns, train: SubjectSet, i: int) -> torch.Tensor:
        return self._volume(state.patterns, train.labels[i])

    def _optimise(self, train: SubjectSet, key: Key, pat: torch.Tensor, work: Path | None,
                  ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Class-wise min-min: surrogate epochs on the perturbed subjects, then signed descent on the patterns."""
        p = self.params
        sur = Surrogate(p, train.channels, train.num_classes, key.seed("slice-freq/surrogate") % (2**31),
                        self.device)
        what = {"method": self.name, "params": repr(p), "key": key.fingerprint, "ids": list(train.ids)}
        ck = work / CHECKPOINT if work is not None else None
        state = sur.load(ck, what) if ck is not None else None
        start, history = 0, []
        if state is not None:
            pat, start, history = state["patterns"], state["round"], state["history"]
            log(f"slice-freq: resuming after round {start} of {p.rounds}")
        alpha = p.step_size or p.eps / 4
        mine = list(shard_indices(len(train)))
        for rnd in range(start, p.rounds):
            deltas = torch.stack([self._volume(pat, train.labels[i]) for i in range(len(train))])
            history.append(sur.train_round(perturbed(train.images, deltas), train.labels, rnd))
            sur.eval()
            for _ in range(p.steps):
                grad = torch.zeros_like(pat)
                for i in mine:
                    grad += self._pattern_grad(sur, train, i, pat)
                pat = self._project(pat - alpha * all_reduce_sum(grad).float().sign())
            sur.train()
            if ck is not None:
                sur.save(ck, {"what": what, "patterns": pat, "round": rnd + 1, "history": history})
        return pat, {"surrogate_loss": history, "rounds": len(history)}

    def _pattern_grad(self, sur: Surrogate, train: SubjectSet, i: int, pat: torch.Tensor) -> torch.Tensor:
        """d(voxel CE of subject ``i``)/d(patterns), summed over the patches that cover the volume."""
        x, y = train.images[i].float().div(255.0), train.labels[i]
        grad = torch.zeros_like(pat)
        for sl in patch_grid(train.shape, self.params.patch):
            q = pat.clone().requires_grad_(True)
            d = self._volume(q, y)[(slice(None), *sl)][None]
            xp = x[(slice(None), *sl)][None]
            loss = F.cross_entropy(sur.model(((xp + d).clamp(0, 1)).to(sur.device)), y[sl][None].to(sur.device))
            (gq,) = torch.autograd.grad(loss, q)
            grad += gq
        return grad
