"""Load any supported source into an :class:`ImageSet`, and save one in the source's own format."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import UserError
from .formats import FORMATS
from .formats.builtin import BUILTINS, parse_builtin
from .formats.catalog import Catalog
from .formats.npz import MemoryCatalog
from .imageset import ImageSet

DETECT_ORDER = ("builtin", "npz", "pets", "flowers102", "folder")


def detect_format(source: str | os.PathLike) -> str:
    s = str(source)
    if parse_builtin(s) is not None:  # NAME or NAME:options
        return "builtin"
    path = Path(s)
    if not path.exists():
        raise UserError(f"{s}: no such file or directory (built-in datasets: {', '.join(BUILTINS)})")
    for name in DETECT_ORDER[1:]:
        if FORMATS.get(name).detect(path):
            return name
    raise UserError(f"{s}: unknown format (expected a .npz archive, an image folder, a Pets/Flowers102 "
                    f"torchvision root, or a built-in name: {', '.join(BUILTINS)})")


def _source_files(source: str | os.PathLike) -> list[tuple[str, Path]] | None:
    """``(name, file)`` of every file of a dataset in sorted order (a folder's files by their path relative to it;
    a single file named ""), or None for a built-in dataset (made from installed packages)."""
    if parse_builtin(str(source)) is not None:
        return None
    root = Path(source)
    if root.is_file():
        return [("", root)]
    return [(f.relative_to(root).as_posix(), f) for f in sorted(root.rglob("*")) if f.is_file()]


def source_digest(source: str | os.PathLike) -> str | None:
    """16 hex digits (BLAKE2b) of a dataset's files, or None for a built-in dataset: a file's bytes, or, for a
    folder, every file under it (its path relative to the folder, then its bytes) in sorted order. Content, not
    times: a copy of the same data (staged to a node's local disk each job, say) has the same digest."""
    files = _source_files(source)
    if files is None:
        return None
    h = hashlib.blake2b(digest_size=8)
    for name, f in files:
        h.update(name.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def source_stat(source: str | os.PathLike) -> str | None:
    """16 hex digits (BLAKE2b) of a dataset's file list with each file's size and modification time in nanoseconds,
    or None for a built-in dataset: what ``rsync`` and ``make`` compare, read from the directory alone. Equal stats
    say the files were not touched since they were recorded, without reading them; unequal ones say nothing (a
    byte-identical copy has other times), so a caller then compares :func:`source_digest`."""
    files = _source_files(source)
    if files is None:
        return None
    h = hashlib.blake2b(digest_size=8)
    for name, f in files:
        st = f.stat()
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def load(source: str | os.PathLike, format: str | None = None, size: int | None = None, seed: int = 0,
         test_fraction: float = 0.2, progress: bool = False) -> ImageSet:
    """Read ``source`` (a path or a built-in name) into memory; ``format`` overrides detection."""
    fmt = format or detect_format(source)
    reader = FORMATS.get(fmt)
    path = Path(str(source))
    if fmt != "builtin" and not path.exists():
        raise UserError(f"{source}: no such file or directory")
    ds = reader.read(path, size=size, seed=seed, test_fraction=test_fraction, progress=progress)
    if len(ds) == 0:
        raise UserError(f"{source}: contains no images")
    return ds


def open_catalog(source: str | os.PathLike, format: str | None = None, seed: int = 0,
                 test_fraction: float = 0.2) -> Catalog:
    """List ``source`` without decoding its pixels (for streamed passes); ``format`` overrides detection."""
    fmt = format or detect_format(source)
    reader = FORMATS.get(fmt)
    path = Path(str(source))
    if fmt != "builtin" and not path.exists():
        raise UserError(f"{source}: no such file or directory")
    if hasattr(reader, "catalog"):
        cat = reader.catalog(path, seed=seed, test_fraction=test_fraction)
    else:  # formats that only exist in memory (built-in data)
        cat = MemoryCatalog(reader.read(path, seed=seed, test_fraction=test_fraction))
    if len(cat) == 0:
        raise UserError(f"{source}: contains no images")
    return cat


def save(ds: ImageSet, out_dir: str | os.PathLike, original: ImageSet | None = None) -> list[Path]:
    """Write ``ds`` into the existing folder ``out_dir`` in its source's format; returns the files written."""
    fmt = ds.meta.get("format", "npz")
    src = ds.meta.get("source")
    return FORMATS.get(fmt).write(ds, Path(out_dir), source=Path(src) if src else None, original=original)
