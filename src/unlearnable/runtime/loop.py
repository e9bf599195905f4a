"""The one epoch loop: resume from the last checkpoint, run the remaining epochs, checkpoint after each.

A trainer keeps its own step (its batches, loss and metrics differ: victims, segmenters) and hands the epoch
skeleton to :class:`EpochLoop`::

    loop = EpochLoop(ckpt, model, opt, settings=asdict(recipe), settings_key="recipe", seed=recipe.seed)
    state = loop.resume()                      # model, optimizer and RNGs restored; {} on a fresh start
    for epoch in loop.epochs(state.get("epoch", 0), recipe.epochs, extra=lambda: {"history": hist}):
        ...                                    # one epoch; the checkpoint is written when the body ends

The checkpoint holds the weights, the optimizer, the next epoch, the settings (a resume with other settings is
refused), the RNG states and the data position (:mod:`unlearnable.runtime.checkpoint`), plus what ``extra`` adds.
Hooks in ``on_epoch_end`` run after each checkpoint with the finished epoch's number (1-based).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from . import checkpoint as CK


class EpochLoop:
    """Epochs with resume and per-epoch checkpoints; ``path`` None runs without checkpoints."""

    def __init__(self, path: str | Path | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 settings: Mapping[str, Any], settings_key: str, seed: int | None, writer: bool = True,
                 map_location: str | torch.device = "cpu", refusal: str = "remove it or change --out") -> None:
        self.path = Path(path) if path is not None else None
        self.model, self.optimizer = model, optimizer
        self.settings, self.settings_key, self.seed = dict(settings), settings_key, seed
        self.writer, self.map_location, self.refusal = writer, map_location, refusal
        self.on_epoch_end: list[Callable[[int], None]] = []

    def resume(self) -> dict[str, Any]:
        """The saved state with model, optimizer and RNGs put back, or ``{}`` when there is no checkpoint.

        Raises:
            UserError: the checkpoint is damaged, or was made with other settings.
        """
        state = CK.load(self.path, map_location=self.map_location) if self.path is not None else None
        if state is None:
            return {}
        if state.get(self.settings_key, self.settings) != self.settings:
            raise UserError(f"{self.path}: checkpoint was made with different training settings; {self.refusal}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        CK.restore_rng(state["rng"])  # augmentation and hooks draw what they would have drawn
        return state

    def epochs(self, start: int, stop: int, extra: Callable[[], Mapping[str, Any]] = dict) -> Iterator[int]:
        """Yield ``start .. stop - 1``; when the caller's body for an epoch ends, checkpoint it (rank 0 writes)."""
        for epoch in range(start, stop):
            yield epoch
            if self.path is not None and self.writer:
                CK.save(self.path, {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                    "epoch": epoch + 1, **extra(), self.settings_key: self.settings,
                                    "rng": CK.rng_state(), "data": CK.data_order(epoch + 1, 0, self.seed)})
            for hook in self.on_epoch_end:
                hook(epoch + 1)
