"""``seg-em``: error-minimising noise for segmentation (min-min, after Huang et al., ICLR 2021, "Unlearnable
Examples"), sample-wise, voxel-wise loss, patch-based.

    min_theta  sum_subjects  min_{|delta_i| <= eps}  sum_voxels CE(f_theta(x_i + delta_i), y_i)

alternates ``epochs`` of surrogate training on the perturbed subjects (random patches, DiceCE) with
``pgd_steps`` signed-gradient *descent* steps on every subject's noise, patch by patch over a grid that covers
the volume. Noise that makes every voxel easy gives a model nothing to learn about anatomy (UMed, Lin et al. 2024,
and VoxShield, Liu et al. 2026, report the same effect for segmentation). Stops after ``rounds`` or once the
surrogate's training loss on perturbed data falls below ``stop_loss``.

Under torchrun each rank descends on its own shard of subjects and the noise is summed over ranks after every
round; the surrogate trains with DDP. A checkpoint (weights, optimiser, noise, RNGs) is written after every round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.subjectset import SubjectSet
from ..errors import UserError
from ..log import log
from ..protect.keys import Key
from ..runtime.distributed import all_reduce_sum, shard_indices
from .base import VOLUME_METHODS, VolumeProtection, check_eps
from .surrogate import Surrogate, SurrogateParams, patch_grid, perturbed

CHECKPOINT = "seg-em.pt"


@dataclass(frozen=True)
class SubjectNoise:
    """Learnt noise ``(N, C, D, H, W)`` (model units) for subjects ``ids``, and what the fit measured."""

    deltas: torch.Tensor
    ids: tuple[str, ...]
    report: dict[str, Any] = field(default_factory=dict)

    def of(self, sid: str) -> torch.Tensor:
        if sid not in self.ids:
            raise UserError(f"subject '{sid}' was not among the subjects the noise was fitted on")
        return self.deltas[self.ids.index(sid)]


@VOLUME_METHODS.register("seg-em")
class SegErrorMinimising(VolumeProtection):
    """Sample-wise error-minimising noise against a 3D surrogate segmenter (min-min, voxel-wise CE, patches)."""

    summary = "error-minimising noise for segmentation: min-min against a small 3D surrogate (sample-wise)"
    test_params = {"rounds": 1, "epochs": 1, "pgd_steps": 1, "patch": 16, "width": 4}

    @dataclass(frozen=True)
    class Params(SurrogateParams):  # surrogate, width, patch, batch_size, lr, epochs (per round)
        eps: float = 8 / 255
        rounds: int = 6  # outer rounds of (surrogate epochs, noise steps)
        pgd_steps: int = 3  # noise descent steps per patch per round
        step_size: float = 0.0  # 0 -> eps / 4
        stop_loss: float = 0.0  # stop once the surrogate's DiceCE on perturbed data is below this (0: never)

        def validate(self) -> None:
            check_eps(self.eps, SegErrorMinimising)
            self.validate_surrogate()
            if self.rounds < 1 or self.pgd_steps < 1:
                raise UserError(f"--param rounds={self.rounds}, pgd_steps={self.pgd_steps}: both must be >= 1")
            if self.step_size < 0 or self.stop_loss < 0:
                raise UserError("--param step_size and stop_loss: must be >= 0")

    def fit(self, train: SubjectSet, key: Key, work: Path | None = None) -> SubjectNoise:
        p = self.params
        sur = Surrogate(p, train.channels, train.num_classes, key.seed("seg-em/surrogate") % (2**31),
                        self.device)
        g = key.generator("seg-em/init")  # a random start inside the budget, as in EM
        deltas = (torch.rand(train.images.shape, generator=g) * 2 - 1) * p.eps
        what = {"method": self.name, "params": repr(p), "key": key.fingerprint, "ids": list(train.ids)}
        start, history = 0, []
        ck = work / CHECKPOINT if work is not None else None
        state = sur.load(ck, what) if ck is not None else None
        if state is not None:
            deltas, start, history = state["deltas"], state["round"], state["history"]
            log(f"seg-em: resuming after round {start} of {p.rounds}")
        mine = list(shard_indices(len(train)))
        for rnd in range(start, p.rounds):
            history.append(sur.train_round(perturbed(train.images, deltas), train.labels, rnd))
            if p.stop_loss and history[-1] < p.stop_loss:
                log(f"seg-em: surrogate loss {history[-1]:.4f} < stop_loss {p.stop_loss} after round {rnd + 1}")
                break
            deltas = self._descend(sur, train, deltas, mine)
            if ck is not None:
                sur.save(ck, {"what": what, "deltas": deltas, "round": rnd + 1, "history": history})
        return SubjectNoise(deltas, tuple(train.ids), {"surrogate_loss": history, "rounds": len(history)})

    def _descend(self, sur: Surrogate, train: SubjectSet, deltas: torch.Tensor, mine: list[int]) -> torch.Tensor:
        """``pgd_steps`` signed descent steps on the noise of subjects ``mine``, patch by patch; summed over ranks."""
        p = self.params
        alpha = p.step_size or p.eps / 4
        out = torch.zeros_like(deltas)
        sur.eval()
        for i in mine:
            x, y, d = train.images[i].float().div(255.0), train.labels[i], deltas[i].clone()
            for sl in patch_grid(train.shape, p.patch):
                xp, yp, dp = x[(slice(None), *sl)][None], y[sl][None], d[(slice(None), *sl)][None]
                for _ in range(p.pgd_steps):
                    grad = sur.voxel_loss_grad(xp + dp, yp)
                    dp = (dp - alpha * grad.sign()).clamp(-p.eps, p.eps)
                    dp = (xp + dp).clamp(0, 1) - xp  # stay inside the image range
                d[(slice(None), *sl)] = dp[0]
            out[i] = d
        sur.train()
        return all_reduce_sum(out).float()  # each subject is descended on by exactly one rank

    def delta(self, state: SubjectNoise, train: SubjectSet, i: int) -> torch.Tensor:
        return state.of(train.ids[i])
