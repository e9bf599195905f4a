"""Seeded K-means in torch (runs on CPU or GPU), used by Unlearnable Clusters to group surrogate features."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KMeansResult:
    centers: torch.Tensor  # (K, D)
    assign: torch.Tensor  # (N,) int64 cluster ids
    inertia: float  # sum of squared distances to the assigned centre
    iterations: int
    inertias: tuple[float, ...] = ()  # every restart's inertia, in the order run (the kept one is the smallest)


def _sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``(N, K)`` without the cancellation-prone ``cdist`` matmul trick."""
    return ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1) if x.shape[0] * c.shape[0] <= 1 << 22 else \
        torch.cdist(x, c).pow(2)


def kmeans_pp_init(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): each new centre drawn with probability ~ D(x)^2.

    The draws use ``generator`` on the CPU, so the seeding is identical on any device.
    """
    n = x.shape[0]
    first = int(torch.randint(0, n, (1,), generator=generator))
    centers = [x[first]]
    d2 = _sq_dist(x, x[first:first + 1])[:, 0]
    for _ in range(1, k):
        w = d2.double().cpu()
        if float(w.sum()) <= 0:  # fewer distinct points than k: pick uniformly
            nxt = int(torch.randint(0, n, (1,), generator=generator))
        else:
            nxt = int(torch.multinomial(w / w.sum(), 1, generator=generator))
        centers.append(x[nxt])
        d2 = torch.minimum(d2, _sq_dist(x, x[nxt:nxt + 1])[:, 0])
    return torch.stack(centers)


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, iters: int = 100, tol: float = 1e-6,
           chunk: int = 65536, restarts: int = 1) -> KMeansResult:
    """Lloyd's algorithm from ``restarts`` k-means++ starts drawn one after another from ``generator``; keeps the
    run with the smallest inertia (the first on ties), so ``restarts=1`` is a single run.

    Args:
        x: features ``(N, D)`` on any device (float32 recommended).
        k: number of clusters (``k <= N``).
        generator: CPU generator for the seeding; the rest is deterministic.
        iters: maximum Lloyd iterations; stops early when the assignment no longer changes.
        chunk: rows per distance computation (memory bound on large N).
        restarts: independent starts; the best by inertia is returned, with every start's inertia.
    Returns:
        Centres ``(K, D)``, assignments ``(N,)`` (on ``x``'s device), inertia and iterations run.
    """
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k={k} must be between 1 and the number of samples ({x.shape[0]})")
    if restarts < 1:
        raise ValueError(f"restarts={restarts} must be at least 1")
    x = x.float()
    best, inertias = None, []
    for _ in range(restarts):  # only the best run's assignment is kept: N values, not restarts x N
        run = _lloyd(x, k, generator, iters, tol, chunk)
        inertias.append(run.inertia)
        if best is None or run.inertia < best.inertia:
            best = run
    return dataclasses.replace(best, inertias=tuple(inertias))


def _lloyd(x: torch.Tensor, k: int, generator: torch.Generator, iters: int, tol: float, chunk: int) -> KMeansResult:
    """One k-means++ start and Lloyd iterations."""
    centers = kmeans_pp_init(x, k, generator)
    assign = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    done = 0
    for it in range(1, iters + 1):
        done = it
        d2 = torch.cat([_sq_dist(x[s:s + chunk], centers) for s in range(0, x.shape[0], chunk)])
        new = d2.argmin(1)
        # Empty clusters take the point farthest from its centre (deterministic, keeps exactly k clusters).
        counts = torch.bincount(new, minlength=k)
        for j in torch.nonzero(counts == 0).flatten().tolist():
            far = int(d2.gather(1, new[:, None])[:, 0].argmax())
            new[far] = j
            d2[far] = 0
        changed = bool((new != assign).any())
        assign = new
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).clamp_min(1).to(x.dtype)
        shift = (sums / counts[:, None] - centers).abs().max()
        centers = sums / counts[:, None]
        if not changed or float(shift) < tol:
            break
    d2 = torch.cat([_sq_dist(x[s:s + chunk], centers) for s in range(0, x.shape[0], chunk)])
    inertia = float(d2.gather(1, assign[:, None]).sum())
    return KMeansResult(centers, assign, inertia, done)
