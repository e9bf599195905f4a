"""Small shared helpers: number parsing, hashing, atomic outputs, JSON."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import UserError


def parse_number(text: str | float | int, what: str = "value") -> float:
    """Parse ``0.03``, ``8/255`` or ``1e-3`` into a float; a UserError names ``what`` otherwise."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip()
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return float(Fraction(num.strip()) / Fraction(den.strip()))
        return float(s)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"{what}: '{text}' is not a number (examples: 0.03, 8/255)") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_output_free(out: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing output unless ``force``; returns the path."""
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out}: output already exists (pass --force to replace it)")
    if out.exists() and out.is_file() and force and out.suffix == "":
        raise UserError(f"{out}: exists and is a file, expected a directory")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Build a directory in a sibling temp folder and move it into place only if the block succeeds.

    On any error (or Ctrl-C) the temp folder is removed and ``out`` is left exactly as it was.
    """
    out = check_output_free(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
