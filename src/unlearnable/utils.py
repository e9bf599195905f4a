"""Small shared helpers: number parsing, hashing, atomic outputs, JSON."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
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


NON_FINITE_KEY = "non_finite"  # top-level note listing the fields written as null


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (inf, nan) replaced by ``None``, ready for strict JSON.

    Strict parsers reject ``Infinity``/``NaN``. When ``obj`` is a dict and something was replaced, a top-level
    ``"non_finite"`` entry maps each replaced field (``a.b.0.c``) to what it was (``"inf"``, ``"-inf"``, ``"nan"``).
    """
    notes: dict[str, str] = {}

    def walk(o: Any, where: str) -> Any:
        if hasattr(o, "tolist") and not isinstance(o, (str, bytes)):  # numpy / torch scalars and arrays
            o = o.tolist()
        if isinstance(o, float) and not math.isfinite(o):
            notes[where.lstrip(".")] = "nan" if math.isnan(o) else ("inf" if o > 0 else "-inf")
            return None
        if isinstance(o, dict):
            return {k: walk(v, f"{where}.{k}") for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v, f"{where}.{i}") for i, v in enumerate(o)]
        return o

    out = walk(obj, "")
    if notes and isinstance(out, dict):
        out[NON_FINITE_KEY] = dict(notes) | dict(out.get(NON_FINITE_KEY) or {})
    return out


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write strict JSON atomically (temp file + rename), so a reader never sees half a file.

    Non-finite numbers become ``null`` (see :func:`strict_json`); the file always parses with a strict parser.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = strict_json(obj)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically: a temp file in the same folder, renamed over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _as_path(value: str | os.PathLike | None) -> Path | None:
    """An existing path (or a path an output will take); None for built-in names such as ``mnist5k``."""
    if value is None or str(value) == "":
        return None
    return Path(value).expanduser().resolve()


def check_separate(inputs: dict[str, str | os.PathLike | None], outputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output inside an input (or an input inside an output) before anything is written.

    ``inputs`` / ``outputs`` map an option name (``SOURCE``, ``--out``, ``--key``) to its path; inputs that are not
    existing paths (built-in names like ``mnist5k`` or ``brain-phantoms:n=6``) are skipped. A protected copy or a
    key inside the source would become part of the data (a new "class", a leaked secret); a source inside an output
    folder could be replaced by ``--force``.
    """
    ins = {k: p for k, v in inputs.items() if v is not None and Path(v).exists() and (p := _as_path(v))}
    outs = {k: p for k, v in outputs.items() if (p := _as_path(v)) is not None}
    for oname, o in outs.items():
        for iname, i in ins.items():
            if o == i or o.is_relative_to(i):
                raise UserError(f"{oname} {o} is inside {iname} {i}: write outputs outside the input data")
            if i.is_relative_to(o):
                raise UserError(f"{iname} {i} is inside {oname} {o}: choose an output folder that does not hold "
                                f"the input data")


# Working folders kept after a failure because they hold what a re-run resumes from (see resumable_dir); the CLI
# names them in its error line.
KEPT: list[tuple[Path, str]] = []


def _holds_files(path: Path) -> bool:
    return path.is_dir() and any(p.is_file() for p in path.rglob("*"))


@contextlib.contextmanager
def resumable_dir(path: str | os.PathLike, resume_hint: str, writer: bool = True) -> Iterator[Path]:
    """Create the working folder ``path``; if the block fails, remove it unless it holds files a re-run needs.

    A folder that is kept is recorded in :data:`KEPT` with ``resume_hint`` (e.g. "re-run the same command to
    resume"), so the error line can say where the work went. Only the ``writer`` process (rank 0) touches disk.
    """
    path = Path(path)
    existed = path.exists()
    if writer:
        path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if writer:
            keep_or_remove(path, resume_hint, remove_empty=not existed or path.name.startswith("."))
        raise


def keep_or_remove(path: Path, resume_hint: str, remove_empty: bool = True) -> None:
    """After a failure: note ``path`` in :data:`KEPT` if it holds files, else remove it (when ``remove_empty``)."""
    if _holds_files(path):
        KEPT.append((path, resume_hint))
    elif remove_empty and path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


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
