"""Sliding-window inference (MONAI) over whole subjects, sharded over ranks."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from monai.inferers import sliding_window_inference

from ..runtime.distributed import shard_indices, unwrap


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, patch: int, device: str = "cpu",
                   overlap: float = 0.25, sharded: bool = True) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(i, logits)`` per subject: ``images`` ``(N, C, D, H, W)`` uint8 → logits ``(K, D, H, W)`` float32.

    With ``sharded`` each rank only yields its own subjects (strided), so an all-reduce of per-subject sums over
    ranks counts every subject exactly once.
    """
    net = unwrap(model)
    was_training = net.training
    net.eval()
    try:
        idx = shard_indices(len(images)) if sharded else range(len(images))
        for i in idx:
            x = images[i:i + 1].to(device).float().div_(255.0)
            roi = tuple(min(patch, s) for s in x.shape[2:])
            out = sliding_window_inference(x, roi, sw_batch_size=4, predictor=net, overlap=overlap, mode="gaussian")
            yield i, out[0].float().cpu()
    finally:
        net.train(was_training)


def predict_labels(model: torch.nn.Module, images: torch.Tensor, patch: int, device: str = "cpu") -> torch.Tensor:
    """Label maps ``(N, D, H, W)`` int64 for all subjects (not sharded)."""
    out = torch.zeros((images.shape[0], *images.shape[2:]), dtype=torch.long)
    for i, logits in predict_logits(model, images, patch, device, sharded=False):
        out[i] = logits.argmax(0)
    return out
