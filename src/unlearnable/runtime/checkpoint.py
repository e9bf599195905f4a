"""The one checkpoint format: atomic save, verified load, and the state that makes a resume exact.

A checkpoint file is a fixed header (magic, payload length, SHA-256 of the payload) followed by a ``torch.save``
payload. :func:`save` writes it to a temporary file in the same folder, flushes and fsyncs it, renames it over the
target and fsyncs the folder, so a crash at any moment leaves either the old checkpoint or the new one, never a
half-written file. :func:`load` checks the header, length and digest before unpickling anything, and refuses a
damaged file with a one-line :class:`~unlearnable.errors.UserError` naming it.

Exact resume: :func:`rng_state` captures the global RNGs of torch (CPU and CUDA), numpy and Python, and
:func:`data_order` the position in the data (epoch, step within it, sampler seed). Both travel with the weights,
and :func:`restore_rng` puts the RNGs back, so that a resumed run draws the same numbers as one that never stopped.

Crash tests (``tests/runtime/test_kill_resume.py``) set ``UNLEARNABLE_TEST_CRASH`` to make a real process die by
``SIGKILL`` at a chosen moment: ``write:N`` half-way through writing the N-th checkpoint of the process (the temp
file holds part of the payload), ``after:N:SECONDS`` that many seconds after the N-th checkpoint is in place (inside
the next epoch; at the latest when the next checkpoint is about to be written, so a fast epoch cannot slip past
it); ``UNLEARNABLE_TEST_CRASH_LOG=FILE`` appends the path of every checkpoint written (how a test counts them).
Unset, nothing happens.

Which checkpoints a run may resume from: :func:`fingerprint` names a checkpoint folder or file by everything the run
depends on (its settings and the bytes, dtype and shape of its data), so a changed image, label, split or setting
gets a new name and starts afresh instead of continuing someone else's run. Every resumable command names its
checkpoints through it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import struct
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError

MAGIC = b"UNLCKPT1"
_HEADER = struct.Struct("<8sQ32s")  # magic, payload length, SHA-256 of the payload
CRASH_ENV, CRASH_LOG_ENV = "UNLEARNABLE_TEST_CRASH", "UNLEARNABLE_TEST_CRASH_LOG"
_saves = [0]  # checkpoints written by this process (the crash hook counts them)


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getbuffer()
    header = _HEADER.pack(MAGIC, len(payload), hashlib.sha256(payload).digest())
    crash = _crash_plan()
    if crash[0] == "after" and _saves[0] == crash[1]:  # the timer below has not fired within the epoch: die now,
        os.kill(os.getpid(), signal.SIGKILL)  # before this epoch's checkpoint (fast epochs end within the delay)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _saves[0] += 1
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            if crash[:2] == ("write", _saves[0]):
                f.write(payload[: len(payload) // 2])
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if os.environ.get(CRASH_LOG_ENV):
            # logged before the rename: a kill between the two then over-counts by one, so the test's next kill
            # point is always reached; logged after it, a kill in between under-counted, and a test asking the
            # resumed run to die writing its last checkpoint saw it finish instead
            with open(os.environ[CRASH_LOG_ENV], "a") as log:
                log.write(f"{path}\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    if crash[:2] == ("after", _saves[0]):
        timer = threading.Timer(crash[2], os.kill, (os.getpid(), signal.SIGKILL))
        timer.daemon = True  # a run that ends first exits normally (the test sees it was not killed)
        timer.start()


FINGERPRINT_CHUNK = 4096  # rows hashed at a time: bounded memory on large datasets


def fingerprint(settings: Any, *tensors: torch.Tensor, rows: torch.Tensor | Sequence[int] | None = None) -> str:
    """16 hex digits (BLAKE2b) over ``settings`` (anything JSON can write; other objects by ``str``) and each of
    ``tensors``' dtype, shape and bytes, optionally only the ``rows`` given (the training split of a dataset).

    A checkpoint name built from it changes with one grey level of one image, one label or one setting, so
    ``--resume`` continues only the same run. The digest holds nothing that the data and settings do not: the
    images it covers are published with the output anyway, and key material goes in only through a derived seed.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    index = None if rows is None else torch.as_tensor(rows, dtype=torch.long)
    for t in tensors:
        t = t.detach().cpu()
        n = len(t) if index is None else len(index)
        h.update(json.dumps([str(t.dtype), [n, *t.shape[1:]]]).encode())
        for start in range(0, n, FINGERPRINT_CHUNK):
            part = t[start:start + FINGERPRINT_CHUNK] if index is None else t[index[start:start + FINGERPRINT_CHUNK]]
            h.update(part.contiguous().numpy().tobytes())
    return h.hexdigest()


def _crash_plan() -> tuple[str, int, float]:
    """``UNLEARNABLE_TEST_CRASH`` parsed: (mode, n-th save, delay in seconds); ``("", 0, 0.0)`` when unset."""
    spec = os.environ.get(CRASH_ENV, "")
    if not spec:
        return "", 0, 0.0
    mode, n, *delay = spec.split(":")
    return mode, int(n), float(delay[0]) if delay else 0.0


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The state saved at ``path``, or ``None`` when there is no file there.

    Raises:
        UserError: the file is truncated, corrupt or not a checkpoint (nothing of it is unpickled).
    """
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    problem = _check(data)
    if problem:
        raise UserError(f"{path}: damaged checkpoint ({problem}); delete it to redo this stage, or rerun without "
                        "--resume")
    return torch.load(io.BytesIO(data[_HEADER.size:]), map_location=map_location, weights_only=False)


def _check(data: bytes) -> str:
    """Why ``data`` is not a complete checkpoint, or ``""`` when it is."""
    if len(data) < _HEADER.size:
        return f"{len(data)} bytes, shorter than the header"
    magic, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        return "not an unlearnable checkpoint"
    got = len(data) - _HEADER.size
    if got != length:
        return f"truncated: {got} of {length} payload bytes"
    if hashlib.sha256(memoryview(data)[_HEADER.size:]).digest() != digest:
        return "checksum mismatch"
    return ""


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable; some file systems (and Windows) cannot open a folder, which is harmless."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU, and CUDA when present), numpy and Python."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the RNG states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def data_order(epoch: int, position: int = 0, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """Where the next batch comes from: ``epoch`` (0-based, the sampler's ``set_epoch``), ``position`` (batches
    already taken in that epoch), the sampler ``seed`` and any generator states the caller adds."""
    return {"epoch": epoch, "position": position, "seed": seed, **extra}
