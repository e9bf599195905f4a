"""One streamed pass over a source: decode a chunk, protect it at native size, measure it, write it, hash it.

Chunks run on a thread pool (:func:`~unlearnable.data.formats.catalog.ordered_map`) with a bounded number in
flight, and the writer takes them back in the source's order, so memory stays flat however many images there are
and the codecs overlap with everything else. Samples outside the protected splits are never decoded for writing:
their source bytes are copied (and hashed) as they are, unless ``--size`` resizes everything.

Under torchrun, a source written file by file (image folders, Pets, Flowers102: :func:`sharded`) is written by every
rank: each decodes, protects, encodes and hashes its round-robin share of the chunks into the one output folder
(which every rank sees: a shared filesystem), and sends the digests and metrics of each chunk to rank 0, which
merges them in chunk order, so the manifest is the one a single process writes. A ``.npz`` archive is one stream,
written in order by rank 0 alone.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import quality as Q
from ..data.formats.catalog import Catalog, Chunk, ordered_map, workers
from ..data.formats.images import ImageFormat, resize
from ..data.quality import PerturbationStats
from ..errors import UserError
from ..log import Progress
from ..runtime import distributed as D
from .base import Protection
from .native import apply_arrays


@dataclass
class PassResult:
    """What a streamed pass produced: output file digests, per-split metrics, the source's digest."""

    files: dict[str, str]
    metrics: dict[str, dict[str, float]]
    source_sha256: str
    resized: bool = False
    lossy_written: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def ssim_sample(cat: Catalog) -> np.ndarray:
    """bool ``(len(cat),)``: the samples whose SSIM a pass measures. Per split, in the split's own order: every one
    up to ``2 * SSIM_MIN`` samples, else every ``min(SSIM_EVERY, n // SSIM_MIN)``-th from the first, so the choice
    depends on neither chunks nor ranks (:mod:`unlearnable.data.quality`)."""
    pick = np.zeros(len(cat), dtype=bool)
    for s in cat.split_names():
        idx = np.asarray(cat.indices(s), dtype=np.int64)
        pick[idx[:: max(1, min(Q.SSIM_EVERY, len(idx) // Q.SSIM_MIN))]] = True
    return pick


def _measure(stats: dict[str, PerturbationStats], splits: list[str], clean: list[np.ndarray],
             written: list[np.ndarray], sampled: list[bool]) -> None:
    """Feed per-split accumulators, one batched call per (split, image size)."""
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for k, (s, a) in enumerate(zip(splits, clean)):
        groups.setdefault((s, a.shape), []).append(k)
    for (s, _), ks in groups.items():
        acc = stats.setdefault(s, PerturbationStats())
        acc.update(torch.from_numpy(np.stack([clean[k] for k in ks])),
                   torch.from_numpy(np.stack([written[k] for k in ks])),
                   ssim_rows=np.array([sampled[k] for k in ks], dtype=bool))


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the process's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sharded(cat: Catalog) -> bool:
    """Whether this job's pass over ``cat`` is split over ranks: distributed, and one output file per sample."""
    return D.world_size() > 1 and cat.per_sample_files


class PassStart:
    """Rank 0 tells the other ranks of a sharded pass which folder it writes into, exactly once (``None``: there
    will be no pass, e.g. rank 0 failed first), so that no rank waits for a pass that never starts."""

    def __init__(self, active: bool) -> None:
        self.pending = active

    def send(self, where: Path | None) -> None:
        if self.pending:
            self.pending = False
            D.broadcast_object(None if where is None else str(where))

    def receive(self) -> Path | None:
        if not self.pending:
            return None
        self.pending = False
        where = D.broadcast_object(None)
        return Path(where) if where is not None else None


def share(n_chunks: int, rank: int, world: int) -> list[int]:
    """Chunk numbers that ``rank`` of ``world`` handles: round-robin, so neighbouring chunks run side by side."""
    return list(range(rank, n_chunks, world))


def stream_protect(cat: Catalog, out_dir: Path, algo: Protection | None, pert: Any, target: set[int],
                   hw: tuple[int, int], size: int | None, image_format: ImageFormat, measure: bool = True,
                   n_workers: int | None = None, progress: bool = False) -> PassResult | None:
    """Write every sample of ``cat`` into ``out_dir``, protecting those in ``target`` (``algo=None``: a plain
    read-and-write through the same reader and writer, for benchmarks). ``progress``: report images written
    (:class:`~unlearnable.log.Progress`; small sets pass in a blink, so only from 1,000 images).

    When :func:`sharded`, every rank must call it with the same ``out_dir``; rank 0 returns the result of the
    whole pass, the others ``None``. An error on any rank is raised on rank 0 (and on that rank).
    """
    shard = sharded(cat)
    if shard and not D.is_main():
        D.barrier()  # rank 0 sets the folder up first (extras copied, masks resized); the others only add samples
        writer = cat.writer(out_dir, size, image_format, setup=False)
    else:
        writer = cat.writer(out_dir, size, image_format)
        if shard:
            D.barrier()
    template = cat.imageset(size=(1, 1), pixels=False)  # labels, ids and splits without pixels
    copy_only = size is None and algo is not None
    pick = ssim_sample(cat) if measure else None

    def process(load: Any) -> tuple[list[int], list[Any], dict[int, str], dict[str, PerturbationStats], int]:
        ch: Chunk = load()
        clean = [resize(a, (size, size)) if size else a for a in ch.arrays]
        resized = [c.shape != a.shape for c, a in zip(clean, ch.arrays)]
        out = list(clean)
        tk = [k for k, i in enumerate(ch.index) if i in target]
        protected = set(tk)  # membership per sample below: a list would make a chunk quadratic (2,700 at 28 x 28)
        if tk and algo is not None:
            prot = apply_arrays(algo, pert, [clean[k] for k in tk], template.subset([ch.index[k] for k in tk]), hw)
            for k, p in zip(tk, prot):
                out[k] = p
        payloads, written, hashes, lossy = [], [], {}, 0
        for k, i in enumerate(ch.index):
            raw = ch.raws[k]
            # only a sample with source bytes can be copied, so only then is "did the method change it" asked
            changed = raw is None or resized[k] or not copy_only or (
                k in protected and not np.array_equal(out[k], clean[k]))
            if raw is not None:
                hashes[i] = hashlib.sha256(raw).hexdigest()
            payload, back = writer.encode(i, out[k], raw, changed)
            lossy += back is not None and writer.is_lossy(i)
            payloads.append(payload)
            written.append(back if back is not None else out[k])
        stats: dict[str, PerturbationStats] = {}
        if measure:
            _measure(stats, [cat.splits[i] for i in ch.index], clean, written, [bool(pick[i]) for i in ch.index])
        return ch.index, payloads, hashes, stats, lossy

    stats: dict[str, PerturbationStats] = {s: PerturbationStats() for s in cat.split_names()}
    raw_hashes: dict[int, str] = {}
    lossy = 0

    def merge(index: list[int], payloads: list[Any], hashes: dict[int, str], part: dict[str, PerturbationStats],
              n_lossy: int) -> None:
        nonlocal lossy
        for i, p in zip(index, payloads):
            writer.put(i, p)
        raw_hashes.update(hashes)
        for s, acc in part.items():
            stats[s] += acc
        lossy += n_lossy

    w = D.world_size() if shard else 1
    # The worker threads are the pass's parallelism: torch's own intra-op threads on top of them would put two
    # teams of spinning OpenMP threads on every core (measured: more CPU for the same pass at 224 px).
    threads = 1 if (n_workers or workers()) > 1 else torch.get_num_threads()
    # a whole-file source hash (.npz) is a second read of the source: run it beside the pass, not after it
    with _intra_op_threads(threads), ThreadPoolExecutor(1, thread_name_prefix="unlearnable-digest") as side:
        early = side.submit(cat.source_digest, {}) if cat.digest_from_source else None
        with Progress(len(cat), "writing", "image", enabled=progress and len(cat) >= 1000) as bar:
            if not shard:
                for res in ordered_map(process, cat.chunks(cat.order()), n_workers):
                    merge(*res)
                    bar.update(len(res[0]))
            else:
                loads = list(cat.chunks(cat.order()))
                mine = share(len(loads), D.rank(), w)
                done: list[tuple[int, Any]] = []
                exc: Exception | None = None
                try:
                    for k, res in zip(mine, ordered_map(process, [loads[k] for k in mine], n_workers)):
                        done.append((k, res))
                        bar.update(min(len(res[0]) * w, len(cat) - bar.done))  # the other ranks keep pace
                except Exception as e:  # sent to rank 0, so that no rank waits for a share that never comes
                    exc = e
                parts = D.gather_object((done, None if exc is None else (type(exc).__name__, str(exc))))
                if exc is not None:
                    raise exc
                if parts is None:
                    return None
                _raise_first([e for _, e in parts if e is not None])
                for _, res in sorted((k_res for ch, _ in parts for k_res in ch), key=lambda t: t[0]):
                    merge(*res)  # chunk order: the sums (and so the manifest) are exactly one process's
        files = writer.close()
        digest = early.result() if early is not None else cat.source_digest(raw_hashes)
    return PassResult(files, {s: a.result() for s, a in stats.items()}, digest,
                      resized=size is not None, lossy_written=lossy)


def _raise_first(errors: list[tuple[str, str]]) -> None:
    """Raise the first rank's error on rank 0: a bad file is a :class:`UserError` (one line, exit 2) there too."""
    if errors:
        kind, msg = errors[0]
        raise UserError(msg) if kind == "UserError" else RuntimeError(f"a rank of the sharded pass failed: {kind}: "
                                                                      f"{msg}")
