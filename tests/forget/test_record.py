"""Issue 10 part 5: the erasure record names whom it erased only to the key holder."""

from __future__ import annotations

import hashlib
import json

from unlearnable.forget.record import CONTENT_PURPOSE, ID_PURPOSE, erasure_record, forgotten_entries, keyed
from unlearnable.protect.keys import Key

IDS = ["1", "070", "synth-004"]  # MRBrainS18-style short ids and a phantom id: all trivially guessable


def _candidates() -> set[str]:
    """Every id an attacker would try: 0..9999 plain and zero-padded, and phantom-style names."""
    out = set()
    for i in range(10000):
        out |= {str(i), f"{i:03d}", f"{i:04d}", f"synth-{i:03d}"}
    return out


def _record(key: Key) -> dict:
    content = {i: hashlib.sha256(f"volume of {i}".encode()).hexdigest() for i in IDS}
    entries = forgotten_entries(key, IDS, content)
    run = {"retain": {"dice": 0.8, "mae": 0.1}, "forget": {"dice": 0.7, "mae": 0.1}, "test": {"dice": 0.7, "mae": 0.1}}
    results = {"original": {**run, "mia_auc": 0.9},
               "strategies": {"salun": {"5": {**run, "mia_auc": 0.5, "time_s": 1.0, "steps": 3,
                                              "guarantee": "approximate", "stop": "calibrated"}},
                              "sisa": {"5": {**run, "mia_auc": 0.5, "time_s": 1.0, "steps": 9, "guarantee": "exact"}}},
               "setup": {"synthetic": True}}
    return erasure_record(key=key, entries=entries, meta={"arch": {"name": "resnet10"}}, model_dir="m",
                          strategies=["salun", "sisa"], horizons=[5], results=results, hashes={}, n_retain=4,
                          n_test=2) | {"content": content}


def test_no_candidate_id_is_recoverable_without_the_key(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("unlearnable.forget.record.sha256_file", lambda p: "0" * 64)
    key = Key.new()
    rec = _record(key)
    content = rec.pop("content")
    text = json.dumps(rec)
    digests = set()
    for c in _candidates():  # the attacks an unkeyed record falls to: plain and prefixed hashes of each guess
        for msg in (c, ID_PURPOSE + c, "unlearnable:" + c, "subject:" + c):
            digests |= {hashlib.sha256(msg.encode()).hexdigest(), hashlib.md5(msg.encode()).hexdigest()}
        if c in IDS:
            digests.add(keyed(Key.new(), ID_PURPOSE, c))  # another key recovers nothing either
    found = [d for d in digests if d in text]
    assert found == []
    assert not any(f'"{i}"' in text for i in IDS) and not any(h in text for h in content.values())
    assert key.secret.hex() not in text and key.fingerprint in text
    # the key holder can verify: recomputing the keyed ids finds exactly the forgotten subjects among the candidates
    listed = {e["id_hmac"] for e in rec["request"]["subjects"]}
    assert {c for c in _candidates() if keyed(key, ID_PURPOSE, c) in listed} == set(IDS)
    assert {keyed(key, CONTENT_PURPOSE, content[i]) for i in IDS} == {e["content_hmac"] for e in
                                                                     rec["request"]["subjects"]}


def test_record_states_guarantee_checks_and_how_to_verify(monkeypatch) -> None:
    monkeypatch.setattr("unlearnable.forget.record.sha256_file", lambda p: "0" * 64)
    rec = _record(Key.new())
    assert rec["guarantee"]["sisa"].startswith("exact") and rec["guarantee"]["salun"].startswith("approximate")
    checks = " ".join(rec["checks_run"])
    assert "content" in checks and "membership" in checks and "calibrated stop" in checks and "sisa" in checks
    assert "HMAC-SHA256(key, 'subject-id:'" in rec["how_to_verify"]
