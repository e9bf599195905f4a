"""The one epoch loop: resume from the last checkpoint, run the remaining epochs, checkpoint after each.

A trainer keeps its own step (its batches, loss and metrics differ: victims, segmenters, UC's generator, the SimCLR
surrogate) and hands the epoch skeleton to :class:`EpochLoop`::

    loop = EpochLoop(ckpt, model, opt, settings=asdict(recipe), settings_key="recipe", seed=recipe.seed)
    state = loop.resume()                      # model, optimizer and RNGs restored; {} on a fresh start
    for epoch in loop.epochs(state.get("epoch", 0), recipe.epochs, extra=lambda: {"history": hist}):
        ...                                    # one epoch; the checkpoint is written when the body ends

The checkpoint holds the weights, the optimizer, the next epoch, the settings (a resume with other settings is
refused), the RNG states and the data position (:mod:`unlearnable.runtime.checkpoint`), plus what ``extra`` adds.
A trainer that draws from its own ``torch.Generator`` objects (one per rank, e.g. SimCLR's augmentations) names
them in ``generators``: every rank's state is gathered into the checkpoint and each rank gets its own back.
Hooks in ``on_epoch_end`` run after each checkpoint with the finished epoch's number (1-based).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from . import checkpoint as CK
from . import distributed as D


class EpochLoop:
    """Epochs with resume and per-epoch checkpoints; ``path`` None runs without checkpoints."""

    def __init__(self, path: str | Path | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 settings: Mapping[str, Any], settings_key: str, seed: int | None, writer: bool = True,
                 map_location: str | torch.device = "cpu", refusal: str = "remove it or change --out",
                 generators: Mapping[str, torch.Generator] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.model, self.optimizer = model, optimizer
        self.settings, self.settings_key, self.seed = dict(settings), settings_key, seed
        self.writer, self.map_location, self.refusal = writer, map_location, refusal
        self.generators = dict(generators or {})
        self.on_epoch_end: list[Callable[[int], None]] = []

    def resume(self) -> dict[str, Any]:
        """The saved state with model, optimizer, RNGs and generators put back, or ``{}`` without a checkpoint.

        Raises:
            UserError: the checkpoint is damaged, was made with other settings, or by another trainer.
        """
        state = CK.load(self.path, map_location=self.map_location) if self.path is not None else None
        if state is None:
            return {}
        if state.get(self.settings_key, self.settings) != self.settings:
            raise UserError(f"{self.path}: checkpoint was made with different training settings; {self.refusal}")
        missing = sorted({"model", "optimizer", "epoch", "rng"} - state.keys()
                         | ({"generators"} - state.keys() if self.generators else set()))
        if missing:  # e.g. written by an earlier version with other field names
            raise UserError(f"{self.path}: checkpoint lacks {', '.join(missing)} (written by another trainer or "
                            f"version); {self.refusal}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        CK.restore_rng(state["rng"])  # augmentation and hooks draw what they would have drawn
        for name, g in self.generators.items():
            saved = state["generators"][name]
            # A resume on more ranks than the saving run: the extra ranks start from rank 0's state. The clone gives
            # set_state a tensor of its own: it reads a view's storage from the start and crashes on rank > 0.
            g.set_state((saved[D.rank()] if D.rank() < len(saved) else saved[0]).clone())
        return state

    def epochs(self, start: int, stop: int, extra: Callable[[], Mapping[str, Any]] = dict) -> Iterator[int]:
        """Yield ``start .. stop - 1``; when the caller's body for an epoch ends, checkpoint it (rank 0 writes).

        Every rank must iterate: with ``generators`` the checkpoint gathers their states from all ranks.
        """
        for epoch in range(start, stop):
            yield epoch
            if self.path is not None:
                gens = {name: _gather_state(g) for name, g in self.generators.items()}
                if self.writer:
                    CK.save(self.path, {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                        "epoch": epoch + 1, **extra(), self.settings_key: self.settings,
                                        "rng": CK.rng_state(), "data": CK.data_order(epoch + 1, 0, self.seed),
                                        **({"generators": gens} if gens else {})})
            for hook in self.on_epoch_end:
                hook(epoch + 1)


def _gather_state(g: torch.Generator) -> list[torch.Tensor]:
    """Every rank's state of ``g`` in rank order (one rank: its own), each in a storage of its own."""
    return [s.clone() for s in D.all_gather_tensor(g.get_state()[None]).unbind(0)]
