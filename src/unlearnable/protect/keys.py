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

import numpy as np
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


def sample_seed(seed: int, sample_id: str) -> int:
    """A 63-bit per-sample seed from a secret per-purpose ``seed`` (:meth:`Key.seed`) and a sample id: stable across
    runs, processes and subsets, so a sample's noise never depends on which other samples are protected with it."""
    h = hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


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


# -- sealing: state that only the key holder can read -----------------------------------------------------------------
SEAL_MAGIC = b"ULSEAL01"


def _seal_keys(key: Key, purpose: str) -> tuple[bytes, bytes]:
    enc = hmac.new(key.secret, f"seal/enc/{purpose}".encode(), hashlib.sha256).digest()
    mac = hmac.new(key.secret, f"seal/mac/{purpose}".encode(), hashlib.sha256).digest()
    return enc, mac


def _xor_stream(data: bytes, enc: bytes, iv: bytes) -> bytes:
    stream = hashlib.shake_256(enc + iv).digest(len(data))
    a, b = np.frombuffer(data, dtype=np.uint8), np.frombuffer(stream, dtype=np.uint8)
    return np.bitwise_xor(a, b).tobytes()


def seal(data: bytes, key: Key, purpose: str) -> bytes:
    """Encrypt and authenticate ``data`` under ``key`` (deterministic: same key and data, same bytes).

    Synthetic-IV construction from the standard library: the IV is HMAC-SHA256 of the plaintext under a MAC key,
    the ciphertext is the plaintext XOR a SHAKE-256 stream keyed by an encryption key and that IV; both keys are
    HMAC-derived from the secret and ``purpose``. Without the key the bytes reveal nothing but their length.
    """
    enc, mac = _seal_keys(key, purpose)
    iv = hmac.new(mac, data, hashlib.sha256).digest()
    return SEAL_MAGIC + iv + _xor_stream(data, enc, iv)


def unseal(blob: bytes, key: Key, purpose: str, what: str = "sealed file") -> bytes:
    """Decrypt :func:`seal`'s output; a different key or any changed byte raises UserError."""
    if len(blob) < len(SEAL_MAGIC) + 32 or not blob.startswith(SEAL_MAGIC):
        raise UserError(f"{what}: not a sealed state file (corrupt or truncated)")
    enc, mac = _seal_keys(key, purpose)
    iv = blob[len(SEAL_MAGIC):len(SEAL_MAGIC) + 32]
    data = _xor_stream(blob[len(SEAL_MAGIC) + 32:], enc, iv)
    if not hmac.compare_digest(hmac.new(mac, data, hashlib.sha256).digest(), iv):
        raise UserError(f"{what}: authentication failed (the file is corrupt or was sealed with another key)")
    return data
