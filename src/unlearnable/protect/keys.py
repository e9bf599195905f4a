"""Private keys: the secret from which every random choice of a protection is derived.

A key is 32 random bytes from :mod:`secrets`, stored hex-encoded in a file with mode 0600. It never appears in a
manifest, a log or a results file; outputs carry only :attr:`Key.fingerprint` (a SHA-256 prefix) so users can tell
keys apart. Per-purpose seeds are derived with HMAC-SHA256, so two purposes never share a stream.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError

KEY_BYTES = 32


@dataclass(frozen=True)
class Key:
    secret: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) < 16:
            raise UserError("key: must be at least 16 bytes")

    def __repr__(self) -> str:  # never print the secret
        return f"Key(fingerprint={self.fingerprint})"

    @classmethod
    def new(cls) -> Key:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_seed(cls, seed: int) -> Key:
        """A reproducible, NOT secret key for tests and demos."""
        return cls(hashlib.sha256(f"unlearnable-public-seed-{seed}".encode()).digest())

    @classmethod
    def coerce(cls, key: Key | bytes | str | int | None) -> Key:
        if isinstance(key, Key):
            return key
        if key is None:
            return cls.new()
        if isinstance(key, int):
            return cls.from_seed(key)
        if isinstance(key, str):
            return cls(key.encode())
        return cls(bytes(key))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"fingerprint:" + self.secret).hexdigest()[:16]

    def seed(self, purpose: str) -> int:
        """A 63-bit seed for ``purpose`` (e.g. ``"cuda/filters"``)."""
        d = hmac.new(self.secret, purpose.encode(), hashlib.sha256).digest()
        return int.from_bytes(d[:8], "little") & ((1 << 63) - 1)

    def generator(self, purpose: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed(purpose))


def save_key(key: Key, path: str | os.PathLike) -> Path:
    """Write a key file readable by its owner only (0600), created atomically with those permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.secret.hex() + "\n")
    return path


def load_key(path: str | os.PathLike) -> Key:
    """Read a key file; refuse one that group or others can read (like ssh does)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: key file not found")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise UserError(f"{path}: key file permissions {oct(mode)} are too open; run: chmod 600 {path}")
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise UserError(f"{path}: not a key file (expected hex text)") from None
    if len(secret) < 16:
        raise UserError(f"{path}: key is too short ({len(secret)} bytes, need at least 16)")
    return Key(secret)


def load_or_create_key(path: str | os.PathLike) -> tuple[Key, bool]:
    """Load the key at ``path`` or create a new one there; returns (key, created)."""
    path = Path(path)
    if path.exists():
        return load_key(path), False
    return Key.new(), True
