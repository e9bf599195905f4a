"""``protect NEW --like OUT --key KEY``: protect new images with the perturbations of an earlier output, no refit.

A hospital protects its archive once, then every new scan the same way. Every protect run of a method whose fit
draws or learns something reusable (class-wise noise tables of ``em``/``random``/``lsp``, ``cuda``'s filters,
``ar``'s coefficients, ``tiles``' tiles, ``uc``'s centres, perturbations and surrogate) stores that state in
``OUT/perturbation.sealed``; ``--like`` reads it back and applies it to the new images:

- class-wise methods give each new image its class's perturbation (classes are matched by name);
- ``ar`` and ``tiles`` draw each image's realisation/phase from the key and the sample id, as in the fit;
- ``uc`` gives an image seen in the fit (same id, same pixels) its fitted cluster, and any other image the
  cluster whose centre is nearest to its surrogate features (same surrogate, same standardisation).

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
import time
from pathlib import Path
from typing import Any

import torch

from ..data import ImageSet, load
from ..errors import UserError
from ..log import log
from ..train import distributed as D
from ..utils import check_output_free, sha256_file
from .ar import ARFilters
from .base import METHODS, Protection
from .cuda import Filters
from .keys import Key, load_key, seal, unseal
from .noise import NoiseTable
from .ssl import rebuild_surrogate
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


def seal_for_reuse(folder: Path, method: str, params: dict[str, Any], pert: Any, key: Key,
                   ds: ImageSet) -> tuple[list[Path], dict]:
    """Write ``folder/perturbation.sealed`` if ``pert`` is reusable; returns (files, the manifest's ``like`` entry).

    The method's parameters are sealed too, so the budget that ``--like`` applies cannot be changed by editing the
    manifest."""
    reason = why_not_reusable(method, pert)
    if reason is not None:
        return [], {"reusable": False, "reason": reason}
    fields = {f.name: getattr(pert, f.name) for f in dataclasses.fields(pert) if f.name != "report"}
    extra: dict[str, Any] = {}
    if isinstance(pert, ClusterPerturbation):
        row = {i: r for r, i in enumerate(ds.ids)}
        extra["digests"] = image_digests(ds.images[[row[i] for i in pert.ids]], pert.ids)
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


def apply_like(algo: Protection, pert: Any, extra: dict[str, Any], target: ImageSet, classes: list[str],
               device: str = "cpu") -> tuple[torch.Tensor, Any, dict[str, Any]]:
    """Protect ``target`` with a stored perturbation; returns (uint8 images, the perturbation used, report)."""
    if isinstance(pert, ClusterPerturbation):
        pert, info = _assign_clusters(algo, pert, extra, target, device)
        return algo.apply(target, pert), pert, info
    return algo.apply(_relabel(target, classes), pert), pert, {}


def _relabel(target: ImageSet, classes: list[str]) -> ImageSet:
    """``target`` with labels indexing the fitted ``classes`` (matched by name: a new upload may hold fewer)."""
    if tuple(target.classes) == tuple(classes):
        return target
    pos = {c: i for i, c in enumerate(classes)}
    for lab in torch.unique(target.labels).tolist():
        if target.classes[lab] not in pos:
            raise UserError(f"class '{target.classes[lab]}' is not one of the {len(classes)} classes the "
                            f"perturbations were fitted on ({', '.join(classes[:8])})")
    lut = torch.tensor([pos.get(c, 0) for c in target.classes], dtype=torch.long)
    return dataclasses.replace(target, labels=lut[target.labels], classes=tuple(classes))


def _assign_clusters(algo: Protection, pert: ClusterPerturbation, extra: dict[str, Any], target: ImageSet,
                     device: str) -> tuple[ClusterPerturbation, dict[str, Any]]:
    """Fitted images keep their cluster; every other image goes to the nearest stored centre."""
    seen = {bytes(d.tolist()): int(c) for d, c in zip(extra["digests"], pert.assign)}
    rows = torch.full((len(target),), -1, dtype=torch.long)
    for i, d in enumerate(image_digests(target.images, target.ids)):
        rows[i] = seen.get(bytes(d.tolist()), -1)
    new = torch.nonzero(rows < 0).flatten()
    if len(new):
        assert pert.surrogate is not None and pert.centers is not None and pert.mu is not None and pert.sd is not None
        model = rebuild_surrogate(pert.surrogate, device)
        feats = algo._features(model, target.images[new])  # type: ignore[attr-defined]  # UC's batched features
        z = (feats - pert.mu) / pert.sd  # the fit's standardisation
        rows[new] = torch.cdist(z.double(), pert.centers.double()).argmin(1)
    info = {"seen": len(target) - len(new), "assigned_to_nearest_centre": len(new),
            "cluster_sizes": torch.bincount(rows, minlength=len(pert.deltas)).tolist()}
    return dataclasses.replace(pert, assign=rows, ids=tuple(target.ids), report={}), info


def protect_like(source: str, like: str | Path, out: str | Path, key_path: str | Path | None, splits: str = "train",
                 params: dict[str, Any] | None = None, method: str | None = None, force: bool = False,
                 device: str = "cpu", size: int | None = None, seed: int = 0, test_fraction: float = 0.2,
                 progress: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Protect ``source`` as ``like`` was protected (its key, method, parameters and stored state); write ``out``.

    Nothing is written if any check fails: wrong key, missing or corrupt state, a sample-wise method, images of
    another size or channel count, classes the fit never saw.
    """
    from .run import MANIFEST, _write

    like, out = Path(like), Path(out)
    if params:
        name = next(iter(params))
        raise UserError(f"--param {name}: parameters cannot change with --like (those in {like / MANIFEST} are "
                        f"reused)")
    if D.launcher_env()[2] > 1:
        raise UserError("--like: runs in one process; start it without torchrun/srun/jsrun")
    if key_path is None:
        raise UserError(f"--key: required with --like (the key file that protected {like})")
    m = read_manifest(like)
    if method is not None and method != m["method"]:
        raise UserError(f"--method {method}: {like} was protected with '{m['method']}' (leave --method out)")
    check_output_free(out, force)
    if out.resolve() == like.resolve():
        raise UserError(f"--out {out}: must differ from --like")
    key = load_key(key_path)
    m, pert, extra = open_state(like, key)
    cls = METHODS.get(m["method"])
    # The sealed parameters were validated by the fit (re-validating would ask for e.g. UC's weights file by the
    # relative path it was given then; the surrogate itself is found through the sealed reference).
    algo = cls(params=cls.Params(**m["params"]), device=device, progress=progress)
    t0 = time.perf_counter()
    ds = load(source, size=size, seed=seed, test_fraction=test_fraction, progress=progress)
    want = [int(v) for v in m["image_shape"]]
    got = list(ds.images.shape[1:])
    if got[0] != want[0]:
        raise UserError(f"{source}: images have {got[0]} channel(s); {like} was protected with {want[0]}")
    if got[1:] != want[1:]:
        raise UserError(f"{source}: images are {got[1]}x{got[2]}; {like} was protected at {want[1]}x{want[2]} "
                        f"(pass --size {want[1]} to resize)")
    split_list = ds.split_names() if splits == "all" else [s.strip() for s in splits.split(",") if s.strip()]
    for s in split_list:
        if s not in ds.split_names():
            raise UserError(f"--splits: split '{s}' not in the data (present: {', '.join(ds.split_names())})")
    idx = ds.indices(split_list)
    if not quiet:
        log(f"protecting {len(idx)} images ({', '.join(split_list)}) of {source} like {like} ('{m['method']}', key "
            f"{key.fingerprint}, no refit)")
    images, used, info = apply_like(algo, pert, extra, ds.subset(idx), list(m["classes"]), device)
    reused = {"from": str(like), "from_manifest_sha256": sha256_file(like / MANIFEST), **info}
    return _write(out, force, ds, ds.with_images(images, idx), used, algo, m["method"], algo.params, key, False,
                  Path(key_path), split_list, source, seed, test_fraction, size, time.perf_counter() - t0, quiet,
                  {"reused": reused})
