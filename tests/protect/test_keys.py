from __future__ import annotations

import os
import stat

import pytest

from unlearnable.errors import UserError
from unlearnable.protect.keys import Key, load_key, save_key


def test_key_file_is_private_and_round_trips(tmp_path):
    k = Key.new()
    p = save_key(k, tmp_path / "k.key")
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert load_key(p) == k
    assert k.secret.hex() not in repr(k) and k.fingerprint in repr(k)


def test_loose_permissions_are_refused(tmp_path):
    p = save_key(Key.new(), tmp_path / "k.key")
    os.chmod(p, 0o644)
    with pytest.raises(UserError, match="too open.*chmod 600"):
        load_key(p)


def test_seeds_are_per_purpose_and_per_key():
    a, b = Key.from_seed(1), Key.from_seed(2)
    assert a.seed("x") == Key.from_seed(1).seed("x")
    assert a.seed("x") != a.seed("y") and a.seed("x") != b.seed("x")
    assert a.fingerprint != b.fingerprint and len(a.fingerprint) == 16


def test_bad_key_files(tmp_path):
    p = tmp_path / "bad.key"
    p.write_text("zz-not-hex")
    os.chmod(p, 0o600)
    with pytest.raises(UserError, match="not a key file"):
        load_key(p)
    with pytest.raises(UserError, match="key file not found"):
        load_key(tmp_path / "missing.key")
