"""MedMNIST-style ``.npz``: ``{train,val,test}_{images,labels}``, images ``(N, H, W)`` or ``(N, H, W, 3)``.

Writing keeps every key, dtype, shape, order and the archive's compression, so a protected file drops into any
MedMNIST pipeline in place of the original. Image arrays are never loaded whole: an uncompressed member is
memory-mapped, a compressed one is decompressed row block by row block as the pass moves through it; the writer
streams rows into the output member the same way.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ...errors import UserError
from ..imageset import SPLITS, ImageSet
from . import FORMATS
from .catalog import Catalog, Chunk
from .images import ImageFormat


def _header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


class _Member:
    """One ``.npy`` member: its header, and rows read by memory map (stored) or sequential decompression."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self.path, self.zf, self.info = path, zf, info
        with zf.open(info) as f:
            self.shape, self.fortran, self.dtype = _header(f)
            self.data_offset = f.tell()
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._stream: IO[bytes] | None = None
        self._pos = 0
        self._map: np.ndarray | None = None

    def load(self) -> np.ndarray:
        with self.zf.open(self.info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)

    def rows(self, a: int, b: int) -> np.ndarray:
        """Rows ``[a, b)`` of the array (a view into a memory map, or freshly decompressed bytes)."""
        if self.info.compress_type == zipfile.ZIP_STORED and not self.fortran:
            if self._map is None:
                with open(self.path, "rb") as f:
                    f.seek(self.info.header_offset)
                    head = f.read(30)
                n, m = struct.unpack("<HH", head[26:30])  # local header: file name and extra field lengths
                start = self.info.header_offset + 30 + n + m + self.data_offset
                self._map = np.memmap(self.path, self.dtype, "r", offset=start, shape=self.shape)
            return np.asarray(self._map[a:b])
        if self.fortran:
            return self.load()[a:b]
        if self._stream is None or a < self._pos:
            if self._stream is not None:
                self._stream.close()
            self._stream = self.zf.open(self.info)
            self._stream.read(self.data_offset)
            self._pos = 0
        if a > self._pos:
            self._stream.read((a - self._pos) * self.row_bytes)
        data = self._stream.read((b - a) * self.row_bytes)
        self._pos = b
        return np.frombuffer(data, self.dtype).reshape(b - a, *self.shape[1:])


def _open(path: Path) -> tuple[zipfile.ZipFile, dict[str, _Member]]:
    try:
        zf = zipfile.ZipFile(path)
        members = {i.filename[:-4]: _Member(path, zf, i) for i in zf.infolist() if i.filename.endswith(".npy")}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz archive ({str(e).splitlines()[0]})") from None
    return zf, members


class NpzCatalog(Catalog):
    """A MedMNIST archive listed from its headers and label arrays only."""

    digest_from_source = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zf, self.members = _open(path)
        present = [s for s in SPLITS if f"{s}_images" in self.members]
        if not present:
            raise UserError(f"{path}: no '<split>_images' arrays (expected keys like train_images, train_labels)")
        labels, splits, ids, layout, shape = [], [], [], None, None
        self.rows: list[tuple[str, int]] = []  # per sample: (images key, row)
        for s in present:
            im_key, lab_key = f"{s}_images", f"{s}_labels"
            if lab_key not in self.members:
                raise UserError(f"{path}: '{im_key}' has no matching '{lab_key}'")
            im, lab = self.members[im_key], self.members[lab_key].load()
            if im.dtype != np.uint8:
                raise UserError(f"{path}: '{im_key}' has dtype {im.dtype}, expected uint8")
            if len(im.shape) == 3:
                this = "NHW"
            elif len(im.shape) == 4 and im.shape[-1] in (1, 3):
                this = "NHWC"
            else:
                raise UserError(f"{path}: '{im_key}' has shape {im.shape}, expected (N, H, W) or (N, H, W, 3)")
            if layout is not None and this != layout:
                raise UserError(f"{path}: '{im_key}' layout {this} differs from the other splits ({layout})")
            if shape is not None and im.shape[1:] != shape:
                raise UserError(f"{path}: splits have different image shapes {sorted({shape, im.shape[1:]})}")
            layout, shape = this, im.shape[1:]
            if lab.ndim == 2 and lab.shape[1] > 1:
                raise UserError(f"{path}: '{lab_key}' has shape {lab.shape}; multi-label tasks are not supported")
            lab2 = lab[:, 0] if lab.ndim == 2 else lab
            if lab2.shape[0] != im.shape[0]:
                raise UserError(f"{path}: '{lab_key}' has {lab2.shape[0]} labels for {im.shape[0]} images "
                                f"in '{im_key}' (counts must match)")
            if im.shape[0] == 0:
                raise UserError(f"{path}: '{im_key}' is empty")
            if (lab2 < 0).any():
                raise UserError(f"{path}: '{lab_key}' has negative label {int(lab2.min())}")
            labels += lab2.astype(np.int64).tolist()
            splits += [s] * len(lab2)
            ids += [f"{s}/{i:06d}" for i in range(len(lab2))]
            self.rows += [(im_key, r) for r in range(len(lab2))]
        import torch

        assert shape is not None and layout is not None
        compressed = any(m.info.compress_type != zipfile.ZIP_STORED for m in self.members.values())
        meta = {"source": str(path), "compressed": compressed,
                "arrays": {k: (m.dtype.str, list(m.shape)) for k, m in self.members.items()}}
        c = 1 if layout == "NHW" else shape[-1]
        super().__init__("npz", tuple(ids), tuple(splits), torch.tensor(labels, dtype=torch.long),
                         tuple(str(i) for i in range(max(labels) + 1)), c, layout, [shape[:2]] * len(ids), meta)

    def order(self) -> list[int]:
        rank = {k: n for n, k in enumerate(self.members)}  # the archive's own key order
        return sorted(range(len(self)), key=lambda i: (rank[self.rows[i][0]], self.rows[i][1]))

    def chunks(self, index: Sequence[int], raw: bool = True) -> Iterator[Callable[[], Chunk]]:
        """Rows are read here, in the calling thread and in order (a compressed member is one sequential stream)."""
        index = list(index)
        size = self.chunk_size(index)
        s = 0
        while s < len(index):
            key, r0 = self.rows[index[s]]
            e = s + 1  # extend over consecutive rows of the same member
            while e < len(index) and e - s < size and self.rows[index[e]] == (key, r0 + e - s):
                e += 1
            block = self.members[key].rows(r0, r0 + e - s)
            arrays = [a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in block]
            part = index[s:e]
            yield lambda part=part, arrays=arrays: Chunk(part, [None] * len(part), arrays)
            s = e

    def writer(self, out_dir: Path, size: int | None, image_format: Any) -> NpzWriter:
        if size is not None and tuple(self.sizes[0]) != (size, size):
            raise UserError(f"--size {size}: a .npz archive keeps its array shape {tuple(self.sizes[0])}")
        return NpzWriter(self, out_dir / self.path.name, self)

    def source_digest(self, raw_hashes: dict[int, str]) -> str:
        from ...utils import sha256_file

        return sha256_file(self.path)


class NpzWriter:
    """Streams images into ``out`` member by member, in the source's key order; other arrays are copied."""

    def __init__(self, cat: Catalog, out: Path, source: NpzCatalog | None) -> None:
        self.cat, self.out, self.source = cat, out, source
        if source is not None:
            self.keys = list(source.members)
            self.counts = {k: int(m.shape[0]) for k, m in source.members.items() if k.endswith("_images")}
        else:
            self.keys = [f"{s}_{w}" for w in ("images", "labels") for s in cat.split_names()]
            self.counts = {f"{s}_images": len(cat.indices(s)) for s in cat.split_names()}
        compressed = cat.meta.get("compressed", True)
        self.zf = zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED,
                                  allowZip64=True)
        self.next_key, self.stream, self.left = 0, None, 0
        self.pending: list[bytes] = []  # rows not yet handed to the compressor
        self.pending_bytes = 0
        self._advance()

    def _array(self, key: str) -> np.ndarray:
        if self.source is not None:
            return self.source.members[key].load()
        split = key[: -len("_labels")]
        lab = self.cat.labels[self.cat.indices(split)].numpy()
        return lab.astype(np.uint8 if len(self.cat.classes) <= 256 else np.int64)[:, None]

    def _open_member(self, key: str, shape: tuple[int, ...]) -> IO[bytes]:
        f = self.zf.open(f"{key}.npy", "w", force_zip64=True)
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        return f

    def _advance(self) -> None:
        """Close the finished member; copy non-image arrays up to the next images key and open it."""
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        while self.next_key < len(self.keys):
            key = self.keys[self.next_key]
            self.next_key += 1
            if key in self.counts:
                n = self.counts[key]
                h, w = self.cat.sizes[0]
                shape = (n, h, w) if self.cat.layout == "NHW" else (n, h, w, self.cat.channels)
                self.stream, self.left = self._open_member(key, shape), n
                if n:
                    return
                self.stream.close()
                self.stream = None
            else:
                with self.zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(self._array(key)), allow_pickle=False)

    def encode(self, i: int, array: np.ndarray, raw: bytes | None, changed: bool) -> tuple[np.ndarray, None]:
        return (array[0] if self.cat.layout == "NHW" else array.transpose(1, 2, 0)), None

    #: Rows go to the compressor in blocks of about this many bytes: one ``write`` per 784-byte row (28 x 28) spent
    #: 10-25% more CPU in deflate than blocks do (docs/benchmarks.md); the archive's bytes are the same.
    BLOCK = 1 << 20

    def put(self, i: int, row: np.ndarray) -> None:
        assert self.stream is not None, "more images than the archive holds"
        b = np.ascontiguousarray(row).tobytes()
        self.pending.append(b)
        self.pending_bytes += len(b)
        self.left -= 1
        if self.left == 0 or self.pending_bytes >= self.BLOCK:
            self.stream.write(b"".join(self.pending))
            self.pending.clear()
            self.pending_bytes = 0
        if self.left == 0:
            self._advance()

    def close(self) -> dict[str, str]:
        if self.stream is not None or self.next_key < len(self.keys):
            raise RuntimeError(f"{self.out}: the pass ended before every image was written")
        self.zf.close()
        from ...utils import sha256_file

        return {self.out.name: sha256_file(self.out)}


@FORMATS.register("npz")
class NpzFormat:
    """MedMNIST ``.npz`` archives."""

    suffixes = (".npz",)

    @staticmethod
    def detect(path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".npz"

    @staticmethod
    def catalog(path: Path, **_: object) -> NpzCatalog:
        return NpzCatalog(path)

    @staticmethod
    def read(path: Path, size: int | None = None, **_: object) -> ImageSet:
        return NpzCatalog(path).imageset(size=size)

    @staticmethod
    def write(ds: ImageSet, out_dir: Path, source: Path | None = None, **_: object) -> list[Path]:
        """Write ``out_dir/<source name>.npz`` with the source's keys, dtypes, order and compression."""
        src = NpzCatalog(source) if source is not None and Path(source).is_file() else None
        cat = MemoryCatalog(ds)
        w = NpzWriter(cat, out_dir / (src.path.name if src else f"{ds.meta.get('name', 'images')}.npz"), src)
        for i in (src.order() if src else cat.order()):
            w.put(i, w.encode(i, ds.images[i].numpy(), None, True)[0])
        return [out_dir / name for name in w.close()]


class MemoryCatalog(Catalog):
    """A catalog over an ImageSet already in memory (built-in data); written as a MedMNIST-style ``.npz``."""

    def __init__(self, ds: ImageSet) -> None:
        super().__init__(ds.meta.get("format", "npz"), ds.ids, ds.splits, ds.labels, ds.classes, ds.channels,
                         ds.layout, [ds.size] * len(ds), dict(ds.meta))
        self.ds = ds

    def order(self) -> list[int]:
        return [i for s in self.split_names() for i in self.indices(s)]  # split by split, as the .npz holds them

    def chunks(self, index: Sequence[int], raw: bool = True) -> Iterator[Callable[[], Chunk]]:
        index = list(index)
        size = self.chunk_size(index)
        for s in range(0, len(index), size):
            part = index[s:s + size]
            arrays = list(self.ds.images[part].numpy())
            yield lambda part=part, arrays=arrays: Chunk(part, [None] * len(part), arrays)

    def imageset(self, index: Sequence[int] | None = None, size: int | tuple[int, int] | None = None,
                 pixels: bool = True) -> ImageSet:
        if size is None and pixels:
            return self.ds if index is None else self.ds.subset(list(index))
        return super().imageset(index, size, pixels)

    def writer(self, out_dir: Path, size: int | None, image_format: ImageFormat) -> Any:
        return NpzWriter(self, out_dir / f"{self.meta.get('name', 'images')}.npz", None)

    def source_digest(self, raw_hashes: dict[int, str]) -> str:
        h = hashlib.sha256(self.ds.images.numpy().tobytes())
        h.update(self.ds.labels.numpy().tobytes())
        return h.hexdigest()
