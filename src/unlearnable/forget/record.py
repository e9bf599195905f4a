"""Binding ``forget`` to the data a model learnt, and the keyed erasure record.

``segment train`` writes a content SHA-256 per subject (image and label volumes, see
:func:`~unlearnable.data.subjects.volume_sha256`) into ``model.json``. ``forget`` recomputes them from SUBJECTS and
refuses to run when any differs (same ids, other brains). The erasure record then names what was forgotten only by
HMAC-SHA256 under a key the user keeps (a 0600 key file, as for protection keys): with the key and the data an
auditor can recompute every entry; without the key the ids and hashes identify nothing, even for guessable ids such
as MRBrainS18's ``1``, ``4``, ``070``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..data.subjects import SubjectSet
from ..errors import UserError
from ..protect.keys import Key
from ..utils import sha256_file

ID_PURPOSE, CONTENT_PURPOSE = "subject-id:", "subject-content:"


def keyed(key: Key, purpose: str, text: str) -> str:
    """HMAC-SHA256 of ``purpose + text`` under ``key`` (hex)."""
    return hmac.new(key.secret, f"{purpose}{text}".encode(), hashlib.sha256).hexdigest()


def check_learnt(s: SubjectSet, ids: Sequence[str], meta: dict[str, Any], model_dir: str | Path, source: str,
                 ) -> dict[str, str]:
    """Content hashes of ``ids`` in ``s``; a UserError names the first whose volumes differ from the model's record."""
    recorded = meta.get("subject_sha256")
    if not recorded:
        raise UserError(f"{Path(model_dir) / 'model.json'}: records no subject content hashes, so the data it learnt "
                        "cannot be checked; re-run 'segment train' to record them")
    have = s.select(ids).hashes()
    for sid in ids:
        want = recorded.get(sid)
        if want != have[sid]:
            got = f"recorded {want[:12]}…" if want else "no hash recorded"
            raise UserError(f"subject {sid}: its volumes in {source} differ from the ones {model_dir} learnt "
                            f"(content SHA-256 {have[sid][:12]}…, {got}); pass the data the model was trained on")
    return have


def forgotten_entries(key: Key, ids: Sequence[str], hashes: dict[str, str]) -> list[dict[str, str]]:
    """One keyed entry per forgotten subject, sorted by its keyed id (so the order says nothing either)."""
    rows = [{"id_hmac": keyed(key, ID_PURPOSE, i), "content_hmac": keyed(key, CONTENT_PURPOSE, hashes[i])}
            for i in ids]
    return sorted(rows, key=lambda r: r["id_hmac"])


GUARANTEES = {
    "exact": "exact: the model is what training without the forgotten subjects gives (SISA: only the shards that "
             "held them were retrained, from a checkpoint taken before they were added; retrain: a fresh model)",
    "approximate": "approximate: the subjects' influence is reduced, not provably removed; judge it by the gap to "
                   "retrain and the membership attacks below",
}


def checks_run(results: dict[str, Any]) -> list[str]:
    """What this run verified, in words, for the record."""
    names = set(results["strategies"])
    out = ["content: every forgotten, retained and held-out subject's volumes matched the content SHA-256 the "
           "model recorded at training time (same ids, same brains)",
           "membership: loss-threshold and learned (logistic regression on retain vs held-out features) attacks, "
           "forget vs held-out subjects, AUC with 95% bootstrap intervals, for every model"]
    if "retrain" in names:
        out.append("reference: a model retrained from scratch on the retained subjects; gaps to it are reported")
    if any(r.get("stop") == "calibrated" for runs in results["strategies"].values() for r in runs.values()):
        out.append("calibrated stop: forget subjects' loss compared with the held-out subjects' spread during "
                   "unlearning")
    if "sisa" in names:
        out.append("sisa: the retrained shards' recorded training data (checkpoint 'seen' lists) holds none of the "
                   "forgotten subjects, before resuming and after retraining")
    return out


VERIFY = ("With the key file (fingerprint above) and the subjects' data: for each subject id S you believe was "
          "forgotten, compute HMAC-SHA256(key, 'subject-id:' + S) and HMAC-SHA256(key, 'subject-content:' + the "
          "subject's content SHA-256 as 'segment train' records it) and find both in request.subjects; check "
          "models_after[...].sha256 against the SHA-256 of the model files. Without the key the entries identify no "
          "one, even for guessable ids.")


def erasure_record(*, key: Key, entries: list[dict[str, str]], meta: dict[str, Any], model_dir: str | Path,
                   strategies: list[str], horizons: list[int], results: dict[str, Any],
                   hashes: dict[str, dict[str, str]], n_retain: int, n_test: int) -> dict[str, Any]:
    """The auditor's record: no raw id, no bare content hash; guarantee and checks per strategy."""
    def brief(r: dict[str, Any]) -> dict[str, Any]:
        mia = r.get("mia") or {}
        return {s: {"dice": r[s]["dice"], "mae": r[s]["mae"]} for s in ("retain", "forget", "test")} | {
            "mia_auc": r.get("mia_auc"), "mia_learned_auc": (mia.get("learned") or {}).get("auc"),
            "mia_learned_ci": (mia.get("learned") or {}).get("ci")}

    guarantee = {n: next(iter(runs.values())).get("guarantee", "approximate") if runs else "approximate"
                 for n, runs in results["strategies"].items()}

    return {
        "record": "unlearnable erasure record", "tool_version": __version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "request": {
            "subjects": entries, "count": len(entries),
            "keyed_with": {"key_fingerprint": key.fingerprint,
                           "id_hmac": f"HMAC-SHA256(key, '{ID_PURPOSE}' + subject id)",
                           "content_hmac": f"HMAC-SHA256(key, '{CONTENT_PURPOSE}' + content SHA-256 of the subject's "
                                           "uint8 image and int64 label volumes, as recorded by 'segment train')"}},
        "model_before": {"sha256": sha256_file(Path(model_dir) / "model.pt"), "arch": meta["arch"]},
        "models_after": {n: {h: {"sha256": d, "path": f"models/{n}/{h}/model.pt"} for h, d in hs.items()}
                         for n, hs in hashes.items()},
        "strategies": strategies, "horizons": horizons,
        "guarantee": {n: GUARANTEES[g] for n, g in guarantee.items()},
        "checks_run": checks_run(results),
        "how_to_verify": VERIFY,
        "metrics": {"original": brief(results["original"]),
                    **{n: {h: brief(r) | {"time_s": r["time_s"], "steps": r.get("steps")} for h, r in runs.items()}
                       for n, runs in results["strategies"].items()}},
        "retained_subjects": n_retain, "test_subjects": n_test,
        "synthetic_data": results["setup"]["synthetic"],
        "note": "Approximate strategies (all but 'sisa' and 'retrain') reduce, but do not provably remove, a "
                "subject's influence; compare gap_to_retrain and mia in results.json.",
    }
