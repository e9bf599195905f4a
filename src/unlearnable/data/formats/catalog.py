"""Datasets listed but not decoded: a :class:`Catalog` knows every sample's id, split, label and native size, and
decodes pixels only when asked, a chunk at a time, so a protect job streams in bounded memory.

A catalog gives an in-memory :class:`~unlearnable.data.imageset.ImageSet` for small sets (``imageset()``), the
chunks of a streamed pass (``chunks()``) and a writer that mirrors the source (``writer()``). Decoding and encoding
run on a thread pool: PIL's codecs, zlib and hashlib release the GIL, and threads share the pixels without the
pickling a process pool would add.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image

from ...errors import UserError
from ..imageset import SPLITS, ImageSet
from .images import (
    ALPHA_MODES,
    GREY_MODES,
    HIGH_DEPTH_MODES,
    ImageFormat,
    alpha_of,
    decode,
    display_info,
    encode,
    high_depth_view,
    hw_of,
    probe,
    protect_high_depth,
    reencode,
    resize,
    stack,
)

T = TypeVar("T")
CHUNK_PIXELS = 1 << 21  # pixels per streamed chunk (~42 images at 224 x 224, ~2,700 at 28 x 28): enough to amortise
# per-call overhead, small enough that the chunks in flight stay a few hundred MiB whatever the dataset size


def chunk_pixels() -> int:
    """Pixels per streamed chunk: :data:`CHUNK_PIXELS`, or ``UNLEARNABLE_CHUNK_PIXELS`` (smaller chunks spread a
    small set over the ranks of a sharded pass; larger ones amortise more)."""
    env = os.environ.get("UNLEARNABLE_CHUNK_PIXELS")
    return max(1, int(env)) if env else CHUNK_PIXELS


def workers() -> int:
    """Threads for decoding/encoding: the CPUs this process may use (``UNLEARNABLE_WORKERS`` overrides)."""
    env = os.environ.get("UNLEARNABLE_WORKERS")
    return max(1, int(env)) if env else max(1, len(os.sched_getaffinity(0)))


def ordered_map(fn: Callable[[T], Any], items: Iterable[T], n_workers: int | None = None) -> Iterator[Any]:
    """``map(fn, items)`` on a thread pool, in order, with at most ``2 x workers`` results in flight (bounded
    memory). Items are drawn from ``items`` lazily in the calling thread."""
    n = n_workers or workers()
    if n == 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(n, thread_name_prefix="unlearnable-io") as pool:
        pending: deque[Future] = deque()
        try:
            for it in items:
                pending.append(pool.submit(fn, it))
                if len(pending) >= 2 * n:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


@dataclass
class Chunk:
    """Consecutive samples of one pass: catalog indices, source bytes (``None`` where there are none) and pixels
    ``(C, H, W)`` at native size."""

    index: list[int]
    raws: list[bytes | None]
    arrays: list[np.ndarray]


@dataclass
class Catalog:
    """Everything an ImageSet holds except the pixels. Subclasses implement ``chunks`` and ``writer``."""

    format: str
    ids: tuple[str, ...]
    splits: tuple[str, ...]
    labels: torch.Tensor
    classes: tuple[str, ...]
    channels: int
    layout: str
    sizes: list[tuple[int, int]]
    meta: dict[str, Any] = field(default_factory=dict)
    # True where source_digest needs nothing from the pass (a whole-file hash): it then runs beside the pass
    digest_from_source = False
    # True where the writer puts every sample in a file of its own: processes can then write disjoint shares of one
    # output folder (a .npz archive is one stream, written in order by one process)
    per_sample_files = False

    def __len__(self) -> int:
        return len(self.ids)

    def split_names(self) -> list[str]:
        present = set(self.splits)
        return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))

    def indices(self, split: str | Sequence[str]) -> list[int]:
        want = {split} if isinstance(split, str) else set(split)
        return [i for i, s in enumerate(self.splits) if s in want]

    def order(self) -> list[int]:
        """The order in which the writer takes samples (the source's own order)."""
        return list(range(len(self)))

    def chunks(self, index: Sequence[int], raw: bool = True) -> Iterator[Callable[[], Chunk]]:
        raise NotImplementedError

    def chunk_size(self, index: Sequence[int]) -> int:
        """Images per chunk: about :func:`chunk_pixels` pixels of a typical image of ``index``."""
        h, w = self.sizes[index[len(index) // 2]] if len(index) else (1, 1)
        return max(1, chunk_pixels() // max(1, h * w))

    def writer(self, out_dir: Path, size: int | None, image_format: ImageFormat) -> Any:
        raise NotImplementedError

    def as_written(self, index: Sequence[int], protected: torch.Tensor, image_format: ImageFormat) -> torch.Tensor:
        """What a reader decodes from the files the writer makes of ``protected`` (uint8 ``(N, C, H, W)``, the
        samples ``index``): the same pixels here, where the writer stores them exactly.
        ``protect --verify`` trains its victim on this, not on what the method computed."""
        return protected

    def source_digest(self, raw_hashes: dict[int, str]) -> str:
        raise NotImplementedError

    def read(self, index: Sequence[int], size: int | tuple[int, int] | None = None) -> tuple[torch.Tensor, bool]:
        """Decode ``index`` into uint8 ``(N, C, H, W)`` (resized to ``size`` if given); returns (images, resized)."""
        arrays: list[np.ndarray] = []
        for ch in ordered_map(lambda f: f(), self.chunks(index, raw=False)):
            arrays += ch.arrays
        return stack(arrays, size, [self.ids[i] for i in index])

    def imageset(self, index: Sequence[int] | None = None, size: int | tuple[int, int] | None = None,
                 pixels: bool = True) -> ImageSet:
        """An in-memory ImageSet of ``index`` (default all). ``pixels=False`` gives a view whose images are one
        zero image broadcast to every sample (no memory) at ``size`` (default: the common native size), for
        methods whose ``fit`` needs only shapes, ids and labels."""
        idx = list(range(len(self))) if index is None else list(index)
        resized = False
        if pixels:
            images, resized = self.read(idx, size)
        else:
            h, w = hw_of(size) or self.common_size(idx)
            images = torch.zeros(1, self.channels, h, w, dtype=torch.uint8).expand(len(idx), -1, -1, -1)
        meta = dict(self.meta, format=self.format, resized=resized)
        return ImageSet(images, self.labels[idx], tuple(self.ids[i] for i in idx),
                        tuple(self.splits[i] for i in idx), self.classes, self.layout, meta)

    def common_size(self, index: Sequence[int]) -> tuple[int, int]:
        sizes = {self.sizes[i] for i in index}
        if len(sizes) != 1:
            raise UserError(f"images have {len(sizes)} different sizes; pass --size N to resize to NxN")
        return next(iter(sizes))


# -- image files ----------------------------------------------------------------------------------------------
class FileCatalog(Catalog):
    """One image file per sample under ``root`` (``rels`` relative paths), plus files to copy alongside."""

    per_sample_files = True

    def __init__(self, fmt: str, root: Path, rels: list[str], labels: Sequence[int], splits: Sequence[str],
                 classes: Sequence[str], ids: Sequence[str] | None = None, extras: Sequence[str] = (),
                 masks: str | None = None, meta: dict[str, Any] | None = None, prefix: str = "") -> None:
        probes = list(ordered_map(probe, [root / r for r in rels]))
        grey = bool(probes) and all(m in GREY_MODES for m, _, _ in probes)
        ids = list(ids) if ids is not None else [str(Path(r).with_suffix("")) for r in rels]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise UserError(f"{root}: two files share the name '{dup}' with different suffixes")
        super().__init__(fmt, tuple(ids), tuple(splits), torch.tensor(list(labels), dtype=torch.long),
                         tuple(classes), 1 if grey else 3, "NHW" if grey else "NHWC", [s for _, s, _ in probes],
                         dict(meta or {}, source=str(root), relpaths=list(rels)))
        self.root, self.rels, self.grey, self.extras, self.masks = root, list(rels), grey, list(extras), masks
        # the writer keeps what the model's view drops: depth and alpha (by mode), ICC profile and orientation
        self.modes, self.shown = [m for m, _, _ in probes], [d for _, _, d in probes]
        self.prefix = prefix  # the output tree's top folder (e.g. "oxford-iiit-pet"), as torchvision expects

    def _load(self, idx: list[int], raw: bool) -> Chunk:
        raws, arrays = [], []
        for i in idx:
            path = self.root / self.rels[i]
            data = path.read_bytes()
            raws.append(data if raw else None)
            arrays.append(decode(data, self.grey, path))
        return Chunk(idx, raws, arrays)

    def chunks(self, index: Sequence[int], raw: bool = True) -> Iterator[Callable[[], Chunk]]:
        index = list(index)
        size = self.chunk_size(index)
        for s in range(0, len(index), size):
            part = index[s:s + size]
            yield lambda part=part: self._load(part, raw)

    def writer(self, out_dir: Path, size: int | None, image_format: ImageFormat, setup: bool = True) -> FileWriter:
        """``setup=False``: only write samples, into a folder another process's writer already set up (the
        extras copied, the masks resized), as the ranks of a sharded pass do."""
        return FileWriter(self.root, out_dir / self.prefix, self.rels, self.extras if setup else (),
                          self.masks if setup else None, size, image_format, self.modes, self.shown)

    def as_written(self, index: Sequence[int], protected: torch.Tensor, image_format: ImageFormat) -> torch.Tensor:
        """Each image through what its file will be: a lossy codec (``--image-format jpeg:Q``, or ``keep`` for a
        JPEG source; :func:`~.images.reencode`) or, for a source of more than 8 bits at its own size, the 16-bit
        file a reader re-windows."""
        out = protected.clone()
        for k, i in enumerate(index):
            rel = self.rels[i]
            suffix, arr = Path(rel).suffix, protected[k].numpy()
            if image_format.lossy_for(suffix):
                out[k] = reencode(protected[k:k + 1], image_format, suffix)[0]
            elif self.modes[i] in HIGH_DEPTH_MODES and tuple(self.sizes[i]) == tuple(arr.shape[1:]):
                pixels = protect_high_depth((self.root / rel).read_bytes(), arr, rel)
                if pixels is not None:  # the view decode() gives of that 16-bit file, without writing it
                    view = high_depth_view(pixels.astype(np.float64), arr.shape[0] == 1)
                    out[k] = torch.from_numpy(view[None] if view.ndim == 2 else view.transpose(2, 0, 1).copy())
        return out

    def source_digest(self, raw_hashes: dict[int, str]) -> str:
        """SHA-256 over sorted (relative path, file SHA-256) pairs; files not hashed during the pass are read."""
        h = hashlib.sha256()
        for rel, i in sorted((r, i) for i, r in enumerate(self.rels)):
            digest = raw_hashes.get(i) or hashlib.sha256((self.root / rel).read_bytes()).hexdigest()
            h.update(f"{rel}\0{digest}\n".encode())
        return h.hexdigest()


class FileWriter:
    """Writes each sample to its source's relative path inside ``out_dir``, as it comes.

    Unchanged samples (``array is None``) are copied byte for byte; changed ones are encoded per ``image_format``
    under the same file name. Files in ``extras`` (annotations, ``.mat`` files) are copied; with ``size`` the label
    maps under ``masks`` (Pets trimaps) are resized with nearest neighbour to match the images.
    """

    def __init__(self, src_root: Path, out_dir: Path, rels: list[str], extras: Sequence[str], masks: str | None,
                 size: int | None, image_format: ImageFormat, modes: Sequence[str] | None = None,
                 shown: Sequence[bool] | None = None) -> None:
        self.src, self.out, self.rels, self.fmt = src_root, out_dir, rels, image_format
        # each source file's PIL mode and whether it carries display metadata, when the source was listed
        self.modes = list(modes) if modes is not None else None
        self.shown = list(shown) if shown is not None else None
        self.hashes: dict[str, str] = {}
        for rel in extras:
            src, dst = src_root / rel, out_dir / rel
            if not src.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copyfile(src, dst)
        if masks and size and (out_dir / masks).is_dir():
            for p in sorted((out_dir / masks).glob("*.png")):
                if not p.name.startswith("."):
                    arr = decode(p.read_bytes(), True, p)
                    p.write_bytes(encode(resize(arr, (size, size), nearest=True), "PNG"))
        for d in sorted({(out_dir / r).parent for r in rels}):
            d.mkdir(parents=True, exist_ok=True)

    def encode(self, i: int, array: np.ndarray, raw: bytes | None, changed: bool) -> tuple[str, np.ndarray | None]:
        """Write sample ``i`` (thread-safe: one file per sample): its source bytes if unchanged, else ``array``
        ``(C, H, W)`` encoded. Returns (the file's SHA-256, the pixels a decoder reads back where they differ from
        ``array``: a lossy codec, or an image written at its own depth of more than 8 bits; else ``None``)."""
        rel = self.rels[i]
        back = None
        if not changed and raw is not None:
            data = raw
        else:
            suffix = Path(rel).suffix
            pixels, reread, display = self._like_source(i, rel, array, raw, suffix)
            data = encode(pixels, self.fmt.codec(suffix), self.fmt.quality, display)
            if self.fmt.lossy_for(suffix) or reread:  # what a reader decodes differs from ``array``
                back = decode(data, array.shape[0] == 1, rel)
        (self.out / rel).write_bytes(data)
        return hashlib.sha256(data).hexdigest(), back

    def is_lossy(self, i: int) -> bool:
        """Whether sample ``i`` is saved with a lossy codec (``encode`` also returns decoded pixels for images
        written at more than 8 bits, which are lossless)."""
        return self.fmt.lossy_for(Path(self.rels[i]).suffix)

    def _like_source(self, i: int, rel: str, array: np.ndarray, raw: bytes | None, suffix: str,
                     ) -> tuple[np.ndarray, bool, dict[str, bytes]]:
        """The pixels to encode for a protected ``array`` ``(C, H, W)``, whether a reader's decoding of them
        differs from ``array``, and the source's display metadata to save with them. An image keeps what its source
        file has beyond the model's view: its ICC profile and EXIF orientation (:func:`~.images.display_info`, so
        viewers show it as they showed the source) and, written losslessly at its own size, more than 8 bits
        (:func:`~.images.protect_high_depth`; a 16-bit X-ray stays 16-bit, re-read through its window) and its
        alpha channel (unchanged)."""
        lossy = self.fmt.lossy_for(suffix)
        if self.modes is not None and self.shown is not None and not self.shown[i] and (
                lossy or self.modes[i] not in (*HIGH_DEPTH_MODES, *ALPHA_MODES)):
            return array, False, {}  # nothing to keep (known from when the source was listed)
        src = self.src / rel
        if raw is None and not src.is_file():
            return array, False, {}
        source = raw if raw is not None else src.read_bytes()
        with Image.open(io.BytesIO(source)) as im:
            mode, hw, display = im.mode, (im.size[1], im.size[0]), display_info(im)
        if lossy or tuple(hw) != tuple(array.shape[1:]):
            return array, False, display  # a lossy codec or resized (--size): the uint8 view is what there is
        if mode in HIGH_DEPTH_MODES:
            out = protect_high_depth(source, array, rel)
            return (array, False, display) if out is None else (out, True, display)
        if mode in ALPHA_MODES:
            return np.concatenate([array, alpha_of(source, rel)[None]]), False, display
        return array, False, display

    def put(self, i: int, digest: str) -> None:
        self.hashes[self.rels[i]] = digest

    def close(self) -> dict[str, str]:
        return dict(self.hashes)


# -- in memory ------------------------------------------------------------------------------------------------
def save_files(ds: ImageSet, out_dir: Path, original: ImageSet | None, extras: Sequence[str] = (),
               masks: str | None = None, image_format: ImageFormat | None = None) -> list[Path]:
    """Write an in-memory ImageSet that came from image files back into the source's tree (samples equal to
    ``original`` are copied byte for byte); without a source, as ``<split>/<class>/<id>.png``."""
    src, rels = ds.meta.get("source"), ds.meta.get("relpaths")
    if src is None or rels is None:
        rels = [f"{s}/{ds.classes[int(y)]}/{i.replace('/', '_')}.png" for s, y, i in zip(ds.splits, ds.labels, ds.ids)]
        root, original = None, None
    else:
        root = Path(src)
    size = ds.size[0] if ds.meta.get("resized") else None
    w = FileWriter(root or out_dir, out_dir, rels, extras if root else (), masks, size, image_format or ImageFormat())
    for i in range(len(ds)):
        changed = (root is None or original is None or bool(ds.meta.get("resized"))
                   or not torch.equal(ds.images[i], original.images[i]))
        raw = None if changed else (root / rels[i]).read_bytes()  # type: ignore[operator]
        w.put(i, w.encode(i, ds.images[i].numpy(), raw, changed)[0])
    return [out_dir / r for r in w.close()]
