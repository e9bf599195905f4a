"""The small 3D surrogate segmenter that ``seg-em`` and an optimised ``slice-freq`` fit their noise against.

It trains with the project's one segmentation loop (:func:`~unlearnable.segment.train.train_epochs`: random
patches, DiceCE, DDP through ``runtime/distributed.py``) on the training subjects *as currently perturbed*, and
hands out voxel-wise cross-entropy gradients on patches that tile each volume. Its state (weights, optimiser,
RNGs) goes into one atomic checkpoint per round, so an interrupted ``protect`` resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..data.imageset import levels_to_uint8
from ..errors import UserError
from ..models.seg3d import SEG_MODELS, build_seg_model
from ..runtime import checkpoint as CK
from ..runtime.distributed import is_main, unwrap, wrap
from ..segment.train import PatchData, SegConfig, make_optimizer, train_epochs


@dataclass(frozen=True)
class SurrogateParams:
    """The surrogate's recipe, shared by the methods that train one (their ``Params`` extend it): architecture,
    base width, patch edge, global batch, learning rate, and epochs per round (an epoch visits every subject twice
    with a random patch)."""

    surrogate: str = "unet"
    width: int = 8
    patch: int = 32
    batch_size: int = 2
    lr: float = 1e-3
    epochs: int = 2

    def validate_surrogate(self) -> None:
        SEG_MODELS.get(self.surrogate)
        if self.patch < 16 or self.patch % 8:
            raise UserError(f"--param patch={self.patch}: must be a multiple of 8 and at least 16")
        for k in ("width", "batch_size", "epochs"):
            if getattr(self, k) < 1:
                raise UserError(f"--param {k}={getattr(self, k)}: must be >= 1")
        if self.lr <= 0:
            raise UserError(f"--param lr={self.lr}: must be > 0")


def perturbed(images: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """uint8 volumes ``(N, C, D, H, W)`` plus ``delta`` (model units), rounded to grey levels as they are stored."""
    return levels_to_uint8((images.float() + delta.mul(255.0).round()).clamp_(0, 255))


def patch_grid(shape: tuple[int, ...], patch: int) -> Iterator[tuple[slice, ...]]:
    """Patches of edge ``min(patch, side)`` that cover a volume of ``shape`` (the last ones flush with the end)."""
    starts = []
    for s in shape:
        p = min(patch, s)
        st = list(range(0, s - p + 1, p))
        if st[-1] != s - p:
            st.append(s - p)
        starts.append([(a, p) for a in st])
    for a in starts[0]:
        for b in starts[1]:
            for c in starts[2]:
                yield tuple(slice(o, o + p) for o, p in (a, b, c))


class Surrogate:
    """A segmenter trained round by round on perturbed subjects; ``seed`` fixes its initialisation and patches."""

    def __init__(self, recipe: SurrogateParams, in_channels: int, num_classes: int, seed: int, device: str = "cpu"):
        self.recipe, self.device, self.seed = recipe, device, seed
        torch.manual_seed(seed)
        self.model = build_seg_model(recipe.surrogate, in_channels, num_classes, recipe.width).to(device)
        self.opt = make_optimizer(self.model.parameters(), recipe.lr)
        self.ddp = wrap(self.model)
        self.cfg = SegConfig(recipe.surrogate, recipe.width, recipe.patch, recipe.epochs, recipe.batch_size,
                             recipe.lr, 2, seed)

    def train_round(self, images: torch.Tensor, labels: torch.Tensor, rnd: int) -> float:
        """``recipe.epochs`` epochs on ``images`` (uint8, already perturbed); the mean loss of the last epoch."""
        data = PatchData(images, labels, torch.zeros(len(images), dtype=torch.bool))
        e = self.recipe.epochs
        hist = train_epochs(self.ddp, data, self.cfg, rnd * e, (rnd + 1) * e, self.opt, device=self.device,
                            desc=f"surrogate round {rnd + 1}")
        return hist[-1]

    def voxel_loss_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """d(mean voxel cross-entropy)/dx for a patch batch ``x`` ``(B, C, p, p, p)`` in [0, 1], labels ``y``."""
        net = unwrap(self.ddp)
        x = x.to(self.device).requires_grad_(True)
        loss = F.cross_entropy(net(x), y.to(self.device))
        (g,) = torch.autograd.grad(loss, x)
        return g.cpu()

    def eval(self) -> None:
        unwrap(self.ddp).eval()  # noise is fitted to the network as it predicts (MONAI's UNet: instance norm)

    def train(self) -> None:
        unwrap(self.ddp).train()

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def save(self, path: Path, extra: dict[str, Any]) -> None:
        if is_main():
            CK.save(path, {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                           "rng": CK.rng_state(), **extra})

    def load(self, path: Path, what: dict[str, Any]) -> dict[str, Any] | None:
        """Restore from ``path`` if it exists and was made for ``what`` (method, params, key, subjects)."""
        state = CK.load(path, map_location=self.device)
        if state is None:
            return None
        if state.get("what") != what:
            raise UserError(f"{path}: checkpoint of another protect job (method, parameters, key or subjects "
                            "differ); rerun without --resume")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        CK.restore_rng(state["rng"])
        return state
