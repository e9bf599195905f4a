"""The stored perturbation state of a protect output (``OUT/perturbation.sealed``), for ``protect --like``.

Every protect run of a method whose fit draws or learns something reusable (class-wise noise tables of
``em``/``random``/``lsp``, ``cuda``'s filters, ``ar``'s coefficients, ``tiles``' tiles, ``uc``'s centres,
perturbations and surrogate) stores that state here; :mod:`unlearnable.protect.like` reads it back.

The rule for secrets: anything that would regenerate the perturbation is only in ``perturbation.sealed``, which is
encrypted and authenticated with a key derived from the user's key (:func:`~unlearnable.protect.keys.seal`); the
key itself is never written into an output. The manifest says in clear only the method, its parameters, the key's
fingerprint, and whether the output can be reused. Sample-wise methods (one perturbation per fitted image: ``em``
and ``random`` in ``samplewise`` mode, ``beo``) store nothing and say so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from ..data.formats.catalog import Catalog
from ..errors import UserError
from ..perturbation import NoiseTable
from .ar import ARFilters
from .cuda import Filters
from .keys import Key, seal, unseal
from .tiles import TileCodes
from .uc import ClusterPerturbation

STATE = "perturbation.sealed"
PURPOSE = "protect/like-state"
FORMAT = 1
#: What each reusable method stores (its fitted perturbation type).
REUSABLE: dict[str, type] = {"ar": ARFilters, "tiles": TileCodes, "cuda": Filters, "lsp": NoiseTable,
                             "em": NoiseTable, "random": NoiseTable, "uc": ClusterPerturbation}


def why_not_reusable(method: str, pert: Any) -> str | None:
    """``None`` if ``pert`` can protect new images, else the one-line reason."""
    if isinstance(pert, NoiseTable) and pert.mode != "classwise":
        return (f"method '{method}' made sample-wise noise (one perturbation per fitted image), so there is nothing "
                f"to give a new image")
    kind = REUSABLE.get(method)
    if kind is None or not isinstance(pert, kind):
        return f"method '{method}' does not store its perturbation for reuse"
    if isinstance(pert, ClusterPerturbation) and (pert.centers is None or pert.surrogate is None):
        return "the clusters' centres and surrogate were not kept by this fit"
    return None


def seal_for_reuse(folder: Path, method: str, params: dict[str, Any], pert: Any, key: Key, cat: Catalog,
                   hw: tuple[int, int]) -> tuple[list[Path], dict]:
    """Write ``folder/perturbation.sealed`` if ``pert`` is reusable; returns (files, the manifest's ``like`` entry).

    The method's parameters are sealed too, so the budget that ``--like`` applies cannot be changed by editing the
    manifest. UC also keeps a digest of each fitted image as the fit saw it (working size ``hw``), read back from
    ``cat``, so that ``--like`` recognises seen images."""
    reason = why_not_reusable(method, pert)
    if reason is not None:
        return [], {"reusable": False, "reason": reason}
    fields = {f.name: getattr(pert, f.name) for f in dataclasses.fields(pert) if f.name != "report"}
    extra: dict[str, Any] = {}
    if isinstance(pert, ClusterPerturbation):
        row = {i: r for r, i in enumerate(cat.ids)}
        extra["digests"] = image_digests(cat.imageset([row[i] for i in pert.ids], size=hw).images, pert.ids)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "method": method, "params": dict(params), "type": type(pert).__name__,
                "fields": fields, "extra": extra}, buf)
    path = folder / STATE
    path.write_bytes(seal(buf.getvalue(), key, PURPOSE))
    return [path], {"reusable": True, "state": STATE}


def image_digests(images: torch.Tensor, ids: tuple[str, ...]) -> torch.Tensor:
    """``(N, 16)`` uint8: a SHA-256 prefix of (id, pixels) per image, to recognise images seen in the fit."""
    out = [hashlib.sha256(i.encode() + b"\0" + img.numpy().tobytes()).digest()[:16] for i, img in zip(ids, images)]
    return torch.frombuffer(bytearray(b"".join(out)), dtype=torch.uint8).reshape(len(ids), 16)


def read_manifest(like: Path) -> dict[str, Any]:
    path = like / "manifest.json"
    if not path.is_file():
        raise UserError(f"--like {like}: not a protect output (no manifest.json)")
    try:
        m = json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"--like {path}: unreadable manifest ({e})") from None
    missing = [k for k in ("method", "params", "key_fingerprint", "image_shape", "classes") if k not in m]
    if missing:
        raise UserError(f"--like {path}: the manifest has no '{missing[0]}'")
    return m


def open_state(like: Path, key: Key) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Check the key against ``like``'s manifest and unseal its state; returns (manifest, perturbation, extra).

    ``manifest["params"]`` is replaced by the sealed (authenticated) copy of the parameters."""
    m = read_manifest(like)
    entry = m.get("like")
    if not isinstance(entry, dict):
        raise UserError(f"--like {like}: no stored perturbation state (written before --like existed); protect "
                        f"the archive again to make it reusable")
    if not entry.get("reusable"):
        raise UserError(f"--like {like}: cannot protect new images: {entry.get('reason', 'not reusable')}; protect "
                        f"them with a fresh fit instead")
    if key.fingerprint != m["key_fingerprint"]:
        raise UserError(f"--key: fingerprint {key.fingerprint} is not the key that protected {like} "
                        f"({m['key_fingerprint']})")
    path = like / str(entry.get("state", STATE))
    if not path.is_file():
        raise UserError(f"{path}: the stored perturbation state is missing")
    try:
        payload = torch.load(io.BytesIO(unseal(path.read_bytes(), key, PURPOSE, str(path))), map_location="cpu",
                             weights_only=True)
        kind = REUSABLE[m["method"]]
        if payload["format"] != FORMAT or payload["method"] != m["method"] or payload["type"] != kind.__name__:
            raise ValueError("the state does not belong to this manifest")
        if payload["params"] != m["params"]:
            raise UserError(f"{like / 'manifest.json'}: its parameters differ from the sealed ones (edited?)")
        m["params"] = payload["params"]
        pert = kind(**payload["fields"])
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - anything unreadable inside an authenticated file is still corrupt
        raise UserError(f"{path}: corrupt stored perturbation state ({type(e).__name__})") from None
    return m, pert, payload["extra"]
