"""Tiles: class-wise periodic sign patterns — a shortcut that random crops and flips cannot remove.

Why this method exists: class-wise noise works because it is a linearly separable shortcut (Yu et al., "Availability
Attacks Create Shortcuts", KDD 2022), but a fixed class-wise pattern (``random --param mode=classwise``, LSP) is
tied to pixel positions; the standard crop augmentation shifts every image by up to 4 pixels, and a noise pattern
shifted by one pixel is uncorrelated with itself, so the victim never sees the same shortcut twice and learns the
images instead (measured in docs/methods.md). A *periodic* pattern is its own shift: a ``p x p`` tile of
``+-eps`` repeated over the image looks the same after any crop up to a phase, and a small convolution followed by
global pooling detects it at every phase. Each class owns one tile; tiles are chosen so that no class's tile equals
another's under any cyclic shift or mirror (the flip augmentation), and every pixel spends the whole L-inf budget
(PSNR = 20 log10(1 / eps) before clipping, 30.1 dB at 8/255).

Tiles are 2 px for colour images of up to 64 px a side and 4 px for grey images and larger colour ones
(:data:`LARGE`, :meth:`PeriodicTiles.period_for`).

Each image gets the tile of its class at a phase drawn from the key and its id, so the noise is not one fixed
image per class, ``apply`` is pure and works at any image size, and nothing per sample needs storing.

A tile's count of ``+`` signs sets its mean, a class-wise brightness offset. Every class gets its own count
(:func:`spread_levels`), the counts are given out so that the near-constant tiles at the extreme counts belong to
classes whose images are close in colour (:func:`levels_by_colour`; ``levels=colour``), and by default
(``levels=oppose``) the assignment or its mirror is taken, whichever *narrows* the classes' colour gaps
(:func:`oppose_colour`): the darkest tile goes to the brighter of two close classes. A victim can then not tell
those classes apart by the images' own brightness instead of by the tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.imageset import ImageSet
from ..errors import UserError
from ..models.classifiers import SMALL
from . import _gradient as G
from .base import METHODS, Protection, add_within_linf, require_fitted, require_labels
from .keys import Key, sample_seed

LEVELS = ("colour", "oppose", "spread", "random")
#: colour images larger than this (pixels a side) get 4-px tiles: victims of that size downsample first with a
#: stride-2 convolution (the ImageNet stem, which the registered models use above :data:`~..models.classifiers.SMALL`),
#: which averages a 2-px tile away but leaves a 4-px one a 2-px pattern that the stem's max pool reads
#: (docs/benchmarks.md, "A 4-px tile for larger colour images")
LARGE = SMALL
BY_COLOUR = ("colour", "oppose")  # the levels given out by each class's mean colour: fit reads pixels for them


@dataclass(frozen=True)
class TileCodes:
    """``tiles[k]``: the ``(C, p, p)`` sign tile of class ``k`` (values in {-1, +1}); ``seed``: per-sample phases."""

    tiles: torch.Tensor
    seed: int


def _variants(t: torch.Tensor) -> torch.Tensor:
    """All cyclic shifts of tile ``t`` ``(C, p, p)`` and of its mirror image: ``(2 p^2, C * p * p)``."""
    p = t.shape[-1]
    out = [torch.roll(m, (dy, dx), (1, 2)).flatten() for m in (t, t.flip(-1)) for dy in range(p) for dx in range(p)]
    return torch.stack(out)


def spread_levels(num_classes: int, channels: int, n: int, g: torch.Generator) -> torch.Tensor:
    """``(K, C)`` counts of ``+1`` signs per channel (in ``1..n-1`` for a tile of ``n`` pixels), spread as far apart as
    the grid allows: evenly for one channel (in an order drawn from ``g``), by greedy farthest-point sampling over
    a grid of at most 4,096 colour levels for several.

    A tile's count sets its mean, ``eps * (2 * count / n - 1)``: a class-wise brightness (or colour) offset that a
    victim reads with one global average, the easiest part of the shortcut. Left to chance most classes share a
    mean near 0; spread, every class owns its own level (measured in docs/methods.md)."""
    if channels == 1:
        return torch.linspace(1, n - 1, num_classes).round().long()[torch.randperm(num_classes, generator=g)][:, None]
    steps = max(2, min(n - 1, int(4096 ** (1 / channels))))
    axis = torch.linspace(1, n - 1, steps).round()
    grid = torch.cartesian_prod(*[axis] * channels).reshape(-1, channels)
    pick = [int(torch.randint(len(grid), (1,), generator=g))]
    for _ in range(num_classes - 1):
        far = torch.cdist(grid, grid[pick]).min(1).values + 1e-3 * torch.rand(len(grid), generator=g)
        pick.append(int(far.argmax()))
    return grid[pick].long()


def _signs(counts: torch.Tensor | None, channels: int, period: int, g: torch.Generator) -> torch.Tensor | None:
    """One candidate ``(C, p, p)`` sign tile: ``counts[c]`` plus signs per channel, or i.i.d. signs when ``counts``
    is None (then None for a constant tile: a brightness change, not a pattern)."""
    n = period * period
    if counts is None:
        t = torch.randint(0, 2, (channels, period, period), generator=g).float().mul_(2).sub_(1)
        return None if float(t.sum().abs()) == t.numel() else t
    t = -torch.ones(channels, n)
    for c in range(channels):
        t[c, torch.randperm(n, generator=g)[:int(counts[c])]] = 1
    return t.reshape(channels, period, period)


EXACT_LEVELS = 8  # up to this many classes the level assignment is searched exhaustively
STARTS_BUDGET = 512  # classes x local-search starts in levels_by_colour (8 starts up to 64 classes)
REFRESH = 32  # swaps between full recomputations of the swap search's product (see levels_by_colour)


def class_means(data: ImageSet, chunk: int = 1024) -> torch.Tensor:
    """``(K, C)`` mean pixel of each class in grey levels, read in chunks; mid-grey for a class with no image."""
    k, c = data.num_classes, data.channels
    sums = torch.zeros(k, c, dtype=torch.float64)
    for i in range(0, len(data.labels), chunk):
        sums.index_add_(0, data.labels[i:i + chunk], data.images[i:i + chunk].double().mean((2, 3)))
    counts = torch.bincount(data.labels, minlength=k).double()
    return torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], torch.full_like(sums, 127.5))


def level_cost(counts: torch.Tensor, means: torch.Tensor) -> float:
    """``sum over class pairs of |tile mean gap| * |colour gap|``: large when classes that the images' own colours
    already tell apart also get far-apart tile means (see :func:`levels_by_colour`)."""
    return float((torch.cdist(counts.double(), counts.double()) * torch.cdist(means.double(), means.double())).sum()
                 / 2)


def levels_by_colour(counts: torch.Tensor, means: torch.Tensor, max_swaps: int = 10_000) -> torch.Tensor:
    """Give the rows of ``counts`` ``(K, C)`` (the spread levels) to the classes so that the far-apart levels go to
    classes whose mean colours ``means`` ``(K, C)`` are close, and near levels to classes the colours already
    separate: the minimum of :func:`level_cost` (exhaustive up to :data:`EXACT_LEVELS` classes, else the best
    local minimum of pairwise swaps from eight fixed starts, fewer above 64 classes: :data:`STARTS_BUDGET`).

    Why: a tile at an extreme level (1 or n - 1 ``+`` signs of n) is nearly a constant, a brightness change with
    little pattern. When the two classes that own the extremes are also far apart in the images' own brightness,
    a victim tells them apart by that brightness, which holds on clean images too, and keeps them (measured on
    tissue patches: every key whose extreme pair was background/white matter or background/grey matter left the
    victim at 43-50%, every other key at chance; docs/methods.md)."""
    k = len(counts)
    c = counts.double()
    gaps = torch.cdist(means.double(), means.double())  # (K, K) colour distance between classes
    if k <= EXACT_LEVELS:  # every assignment (8! = 40,320 at most), scored at once
        import itertools

        perms = torch.tensor(list(itertools.permutations(range(k))))
        d = torch.cdist(c[perms], c[perms])  # (P, K, K)
        return counts[perms[int((d * gaps).sum((1, 2)).argmin())]]
    # eight starts up to 64 classes, then fewer (one from 512 classes): each costs about K swaps of O(K^2)
    n_starts = max(1, min(8, STARTS_BUDGET // k))
    starts = [torch.arange(k)] + [torch.randperm(k, generator=torch.Generator().manual_seed(r))
                                  for r in range(n_starts - 1)]
    best, best_cost = None, float("inf")
    for order in starts:  # pairwise swaps from several fixed starts; keep the best local minimum
        d = torch.cdist(c[order], c[order])  # level distance between classes under the current order
        a = d @ gaps
        for swap in range(max_swaps):
            diag = a.diagonal()
            # change of the cost if classes i and j swap levels (d, gaps symmetric)
            delta = a + a.T - diag[:, None] - diag[None, :] + 2 * d * gaps
            i, j = divmod(int(delta.argmin()), k)
            if float(delta[i, j]) > -1e-9:
                break
            order[[i, j]] = order[[j, i]]
            # a swap changes rows and columns i and j of d only, so the product follows in O(K^2), not O(K^3)
            # (1,000 classes: seconds instead of minutes); it is recomputed now and then so that rounding cannot drift
            both, swapped = [i, j], [j, i]
            new = d.clone()  # the same distances, rows and columns i and j exchanged (exact: counts are integers)
            new[both] = new[swapped]
            new[:, both] = new[:, swapped]
            if (swap + 1) % REFRESH == 0:
                d, a = new, new @ gaps
                continue
            change = new - d
            a += change[:, both] @ gaps[both]
            change[:, both] = 0
            a[both] += change[both] @ gaps
            d = new
        cost = level_cost(counts[order], means)
        if cost < best_cost - 1e-9:
            best, best_cost = order.clone(), cost
    return counts[best]


def colour_agreement(counts: torch.Tensor, means: torch.Tensor) -> float:
    """How far the tiles' means widen the classes' colour gaps: ``sum over class pairs of (colour gap . count gap) /
    |colour gap|^2``, each pair's change along its own colour difference relative to that difference (pairs of equal
    mean colour count 0). Positive: the brighter class of a pair tends to get the brighter tile; negative: the
    tiles narrow the gaps. Close pairs weigh most, as they are the ones a budget of a few grey levels can close.

    :func:`level_cost` cannot see this sign: a level assignment and its mirror (every count ``c`` replaced by
    ``n - c``, every tile mean negated) cost the same."""
    m, c = means.double(), counts.double()
    dm, dc = m[:, None] - m[None], c[:, None] - c[None]
    d2 = dm.pow(2).sum(-1)
    rel = (dm * dc).sum(-1) / d2.clamp(min=1e-12)
    return float(torch.where(d2 > 0, rel, torch.zeros_like(rel)).sum() / 2)


def oppose_colour(counts: torch.Tensor, means: torch.Tensor, n: int) -> torch.Tensor:
    """``counts`` or its mirror ``n - counts`` (the same :func:`level_cost`, the same spread), whichever opposes
    the classes' mean colours (:func:`colour_agreement` at most 0): the near-constant darkest tile then goes to
    the brighter of the two classes that own the extremes, so the tiles narrow the brightness gaps a victim could
    read on clean images instead of widening them.

    Why: with ``levels=colour`` the key chose between the two. On tissue patches (background, CSF, GM, WM) the
    assignment that gave CSF the darkest and GM the brightest tile widened their 26-level gap to 40, and converged
    ResNet-18 victims kept 45.0% over six runs against 38.1% over ten for its mirror (docs/benchmarks.md)."""
    mirror = n - counts
    return mirror if colour_agreement(counts, means) > 0 else counts


def draw_tiles(num_classes: int, channels: int, period: int, g: torch.Generator, candidates: int = 64,
               levels: str = "spread", means: torch.Tensor | None = None) -> torch.Tensor:
    """``(K, C, p, p)`` sign tiles, greedily chosen so that the closest pair (under every shift and mirror) is as far
    apart as ``candidates`` random draws per class allow; with ``levels="spread"`` each class's count of ``+1``
    signs per channel comes from :func:`spread_levels` (shifts and mirrors keep counts, so classes with different
    counts can never be confused), with ``"colour"`` the same counts are given out by :func:`levels_by_colour`
    (``means``: each class's mean colour), with ``"oppose"`` then signed by :func:`oppose_colour`, with
    ``"random"`` signs are i.i.d."""
    counts = spread_levels(num_classes, channels, period * period, g) if levels != "random" else None
    if levels in BY_COLOUR:
        if means is None:
            raise ValueError(f"draw_tiles(levels={levels!r}) needs the class means")
        counts = levels_by_colour(counts, means)
        if levels == "oppose":
            counts = oppose_colour(counts, means, period * period)
    chosen: list[torch.Tensor] = []
    n = channels * period * period
    # every shift and mirror of every chosen tile (2 p^2 rows per class), one row each: a class's candidates are
    # scored against all of them in one product (1,000 classes: seconds, where a product per chosen tile took minutes)
    bank, rows = torch.empty(num_classes * 2 * period * period, n), 0
    for k in range(num_classes):
        best, best_d, best_same = None, -1.0, 1.0
        # a level shared by several classes may hold too few patterns to tell them apart (one +1 in a tile has a
        # single pattern up to shifts): then this class falls back to i.i.d. signs
        for level in ([] if counts is None else [counts[k]]) + [None]:
            drawn = [t for t in (_signs(level, channels, period, g) for _ in range(candidates)) if t is not None]
            if not drawn:
                continue
            cand = torch.stack(drawn).reshape(len(drawn), n)
            # agreement with every shift/mirror of each chosen tile, normalised (1 = identical, -1 = negated); the
            # distance counts a negated tile as close too. Sums of +-1 are exact in float32, so the choice does not
            # depend on how the product is blocked.
            agree = (cand @ bank[:rows].T) / n if rows else torch.zeros(len(drawn), 1)
            d = 1 - agree.abs().amax(1)
            i = int(d.argmax())  # the first of equals, as a draw-by-draw scan keeps it
            if float(d[i]) > best_d:
                best, best_d, best_same = drawn[i], float(d[i]), float(agree[i].max())
            if best_same < 1:  # not identical to any chosen tile under any shift or mirror
                break
        assert best is not None
        chosen.append(best)
        v = _variants(best)
        bank[rows:rows + len(v)] = v
        rows += len(v)
    return torch.stack(chosen)


def _phase(seed: int, sample_id: str, period: int) -> tuple[int, int]:
    s = sample_seed(seed, sample_id)
    return (s & 0xFF) % period, ((s >> 8) & 0xFF) % period


def tile_noise(tiles: torch.Tensor, labels: torch.Tensor, ids: tuple[str, ...], seed: int,
               size: tuple[int, int]) -> torch.Tensor:
    """Sign noise ``(N, C, H, W)``: each image's class tile repeated over ``size`` at the image's own phase."""
    k, c, p, _ = tiles.shape
    h, w = size
    reps = (-(-h // p) + 1, -(-w // p) + 1)
    big = tiles.repeat(1, 1, *reps)  # (K, C, >= H + p, >= W + p)
    out = torch.empty(len(ids), c, h, w)
    for i, (lab, sid) in enumerate(zip(labels.tolist(), ids)):
        oy, ox = _phase(seed, sid, p)
        out[i] = big[lab, :, oy:oy + h, ox:ox + w]
    return out


@METHODS.register("tiles")
class PeriodicTiles(Protection):
    """Class-wise periodic +-eps tiles at a per-image phase: shift- and flip-robust shortcuts (model-free)."""

    summary = "recommended: class-wise periodic sign tiles, robust to crop/flip (model-free, any size)"
    size_free = True  # the noise is generated at each image's own size

    @dataclass(frozen=True)
    class Params:
        eps: float = 8 / 255
        # tile side in pixels; 0 = auto: 2 for colour images of at most LARGE px a side, else 4 (docs/methods.md)
        period: int = 0
        # each class's tile mean: "oppose" (the default: as "colour", signed so that the tiles narrow the classes'
        # colour gaps), "colour" (spread apart, the far-apart levels to classes whose images are close in colour;
        # the key chose the sign), "spread" (spread apart in a key-drawn order) or "random" (i.i.d. signs)
        levels: str = "oppose"

        def validate(self) -> None:
            G.check_budget(self.eps, "linf")
            if self.period != 0 and not 2 <= self.period <= 16:
                raise UserError(f"--param period={self.period}: must be 0 (auto) or in 2..16 pixels")
            if self.levels not in LEVELS:
                raise UserError(f"--param levels={self.levels}: must be one of {', '.join(LEVELS)}")

    @property
    def fit_reads_pixels(self) -> bool:  # type: ignore[override]
        """``levels=oppose`` (the default) and ``colour`` read pixels once, for each class's mean colour; the others
        need labels, ids and the channel count only."""
        return self.params.levels in BY_COLOUR

    def period_for(self, channels: int, num_classes: int, size: tuple[int, int] | None = None) -> int:
        """The tile side: the parameter, or the measured best (colour images of at most :data:`LARGE` pixels a
        side: 2; grey images and larger colour ones: 4), grown until the tiles can still tell ``num_classes``
        classes apart under every shift and mirror. ``size``: the ``(H, W)`` the tiles are fitted at."""
        small_colour = channels == 3 and (size is None or max(size) <= LARGE)
        p = self.params.period or (2 if small_colour else 4)
        while 2 ** (channels * p * p) < 16 * num_classes and p < 16:
            p += 1
        return p

    def fit(self, data: ImageSet, key: Key) -> TileCodes:
        require_labels(self.name, data)
        period = self.period_for(data.channels, data.num_classes, data.size)
        if self.params.period and period != self.params.period:
            raise UserError(f"--param period={self.params.period}: too small to tell {data.num_classes} classes "
                            f"apart (use {period} or more)")
        means = class_means(data) if self.params.levels in BY_COLOUR else None
        tiles = draw_tiles(data.num_classes, data.channels, period, key.generator("tiles/codes"),
                           levels=self.params.levels, means=means)
        return TileCodes(tiles, key.seed("tiles/phases"))

    def apply(self, data: ImageSet, perturbation: TileCodes) -> torch.Tensor:
        t = perturbation.tiles
        require_fitted(data, t.shape[0], t.shape[1], "tiles")
        noise = tile_noise(t, data.labels, data.ids, perturbation.seed, data.size)
        return add_within_linf(data.images, noise * self.params.eps, self.params.eps)


def phases(seed: int, ids: tuple[str, ...] | list[str], period: int) -> torch.Tensor:
    """``(N, 2)`` int64: each sample's ``(row, column)`` phase in ``0..period-1``, drawn from ``seed`` and its id
    (the same phases as :func:`tile_noise`), so a sample's noise never depends on which others come with it."""
    return torch.tensor([_phase(seed, i, period) for i in ids], dtype=torch.long).reshape(-1, 2)


def tile_at_phases(tiles: torch.Tensor, phase: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Repeat tile ``i`` ``(B, C, p, p)`` over ``size`` starting at ``phase[i]`` ``(B, 2)``: ``(B, C, H, W)``.

    One gather, differentiable in ``tiles`` (UC trains its tiles through it); equals :func:`tile_noise` per sample.
    """
    b, _, p, _ = tiles.shape
    h, w = size
    rows = (phase[:, :1].to(tiles.device) + torch.arange(h, device=tiles.device)) % p  # (B, H)
    cols = (phase[:, 1:].to(tiles.device) + torch.arange(w, device=tiles.device)) % p  # (B, W)
    picked = tiles[torch.arange(b, device=tiles.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)  # advanced indices first: (B, H, W, C) -> (B, C, H, W)
