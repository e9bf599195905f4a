"""One streamed pass over a source: decode a chunk, protect it at native size, measure it, write it, hash it.

Chunks run on a thread pool (:func:`~unlearnable.data.formats.catalog.ordered_map`) with a bounded number in
flight, and the writer takes them back in the source's order, so memory stays flat however many images there are
and the codecs overlap with everything else. Samples outside the protected splits are never decoded for writing:
their source bytes are copied (and hashed) as they are, unless ``--size`` resizes everything.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.formats.catalog import Catalog, Chunk, ordered_map
from ..data.formats.images import ImageFormat, resize
from ..data.quality import PerturbationStats
from ..log import Progress
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


def _measure(stats: dict[str, PerturbationStats], splits: list[str], clean: list[np.ndarray],
             written: list[np.ndarray]) -> None:
    """Feed per-split accumulators, one batched call per (split, image size)."""
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for k, (s, a) in enumerate(zip(splits, clean)):
        groups.setdefault((s, a.shape), []).append(k)
    for (s, _), ks in groups.items():
        acc = stats.setdefault(s, PerturbationStats())
        acc.update(torch.from_numpy(np.stack([clean[k] for k in ks])),
                   torch.from_numpy(np.stack([written[k] for k in ks])))


def stream_protect(cat: Catalog, out_dir: Path, algo: Protection | None, pert: Any, target: set[int],
                   hw: tuple[int, int], size: int | None, image_format: ImageFormat, measure: bool = True,
                   n_workers: int | None = None, progress: bool = False) -> PassResult:
    """Write every sample of ``cat`` into ``out_dir``, protecting those in ``target`` (``algo=None``: a plain
    read-and-write through the same reader and writer, for benchmarks). ``progress``: report images written
    (:class:`~unlearnable.log.Progress`; small sets pass in a blink, so only from 1,000 images)."""
    writer = cat.writer(out_dir, size, image_format)
    template = cat.imageset(size=(1, 1), pixels=False)  # labels, ids and splits without pixels
    copy_only = size is None and algo is not None

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
            lossy += back is not None
            payloads.append(payload)
            written.append(back if back is not None else out[k])
        stats: dict[str, PerturbationStats] = {}
        if measure:
            _measure(stats, [cat.splits[i] for i in ch.index], clean, written)
        return ch.index, payloads, hashes, stats, lossy

    stats: dict[str, PerturbationStats] = {s: PerturbationStats() for s in cat.split_names()}
    raw_hashes: dict[int, str] = {}
    lossy = 0
    # a whole-file source hash (.npz) is a second read of the source: run it beside the pass, not after it
    with ThreadPoolExecutor(1, thread_name_prefix="unlearnable-digest") as side:
        early = side.submit(cat.source_digest, {}) if cat.digest_from_source else None
        with Progress(len(cat), "writing", "image", enabled=progress and len(cat) >= 1000) as bar:
            for index, payloads, hashes, part, n_lossy in ordered_map(process, cat.chunks(cat.order()), n_workers):
                for i, p in zip(index, payloads):
                    writer.put(i, p)
                raw_hashes.update(hashes)
                for s, acc in part.items():
                    stats[s] += acc
                lossy += n_lossy
                bar.update(len(index))
        files = writer.close()
        digest = early.result() if early is not None else cat.source_digest(raw_hashes)
    return PassResult(files, {s: a.result() for s, a in stats.items()}, digest,
                      resized=size is not None, lossy_written=lossy)
