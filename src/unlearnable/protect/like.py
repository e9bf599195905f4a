"""``protect NEW --like OUT --key KEY``: protect new images with the perturbations of an earlier output, no refit.

A hospital protects its archive once, then every new scan the same way. ``--like`` reads the state stored in
``OUT/perturbation.sealed`` (:mod:`unlearnable.protect.sealed`) and applies it to the new images in the same
streamed pass as a fresh fit (native size, the source's own format):

- class-wise methods give each new image its class's perturbation (classes are matched by name);
- ``ar`` and ``tiles`` draw each image's realisation/phase from the key and the sample id, as in the fit;
- ``uc`` gives an image seen in the fit (same id, same pixels) its fitted cluster, and any other image the
  cluster whose centre is nearest to its surrogate features (same surrogate, same standardisation).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from ..data import ImageSet
from ..data.formats.catalog import Catalog
from ..data.formats.images import parse_image_format
from ..data.io import open_catalog
from ..errors import UserError
from ..log import log
from ..runtime import distributed as D
from ..utils import check_output_free, check_separate, sha256_file
from .base import METHODS, Protection
from .keys import load_key
from .sealed import image_digests, open_state, read_manifest
from .ssl import rebuild_surrogate
from .uc import ClusterPerturbation


class AsFitted:
    """``algo`` with each batch's labels mapped to the fitted ``classes`` by name (a new upload may hold fewer or
    order them otherwise); everything else is ``algo``'s."""

    def __init__(self, algo: Protection, source_classes: tuple[str, ...], classes: list[str]) -> None:
        self._algo = algo
        pos = {c: i for i, c in enumerate(classes)}
        self._lut = torch.tensor([pos.get(c, 0) for c in source_classes], dtype=torch.long)
        self._classes = tuple(classes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._algo, name)

    def apply(self, data: ImageSet, pert: Any) -> torch.Tensor:
        return self._algo.apply(dataclasses.replace(data, labels=self._lut[data.labels], classes=self._classes),
                                pert)


def as_fitted(algo: Protection, cat: Catalog, target: list[int], classes: list[str]) -> Any:
    """``algo`` itself if ``cat`` has the fitted classes, else an :class:`AsFitted` view; refuses classes the fit
    never saw (among the samples to protect)."""
    if tuple(cat.classes) == tuple(classes):
        return algo
    labels = set(cat.labels[target].tolist()) if target else set()
    for lab in sorted(labels):
        if cat.classes[lab] not in classes:
            raise UserError(f"class '{cat.classes[lab]}' is not one of the {len(classes)} classes the "
                            f"perturbations were fitted on ({', '.join(classes[:8])})")
    return AsFitted(algo, tuple(cat.classes), classes)


def assign_clusters(algo: Protection, pert: ClusterPerturbation, extra: dict[str, Any], target: ImageSet,
                    device: str) -> tuple[ClusterPerturbation, dict[str, Any]]:
    """Fitted images keep their cluster; every other image goes to the nearest stored centre. ``target`` holds the
    images at the fit's working size."""
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


def fit_size(m: dict[str, Any], like: Path) -> tuple[int, int]:
    """The working size the stored perturbation was fitted at (``manifest.images.fit_size``)."""
    hw = (m.get("images") or {}).get("fit_size") or m["image_shape"][1:]
    if len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
        raise UserError(f"--like {like / 'manifest.json'}: no fit size in 'images.fit_size'")
    return int(hw[0]), int(hw[1])


def protect_like(source: str, like: str | Path, out: str | Path, key_path: str | Path | None, splits: str = "train",
                 params: dict[str, Any] | None = None, method: str | None = None, force: bool = False,
                 device: str = "cpu", size: int | None = None, seed: int = 0, test_fraction: float = 0.2,
                 progress: bool = False, quiet: bool = False, image_format: str = "png") -> dict[str, Any]:
    """Protect ``source`` as ``like`` was protected (its key, method, parameters and stored state); write ``out``.

    New images go through the same streamed pass as a fresh fit: applied at their native size (the stored
    perturbation was fitted at ``like``'s working size) and written in the source's own format. Nothing is written
    if any check fails: wrong key, missing or corrupt state, a sample-wise method, another channel count, classes
    the fit never saw.
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
    check_separate({"SOURCE": source, "--like": like}, {"--out": out})
    fmt = parse_image_format(image_format)
    key = load_key(key_path)
    m, pert, extra = open_state(like, key)
    hw = fit_size(m, like)
    cls = METHODS.get(m["method"])
    # The sealed parameters were validated by the fit (re-validating would ask for e.g. UC's weights file by the
    # relative path it was given then; the surrogate itself is found through the sealed reference).
    algo = cls(params=cls.Params(**m["params"]), device=device, progress=progress)
    t0 = time.perf_counter()
    cat = open_catalog(source, seed=seed, test_fraction=test_fraction)
    if cat.channels != int(m["image_shape"][0]):
        raise UserError(f"{source}: images have {cat.channels} channel(s); {like} was protected with "
                        f"{m['image_shape'][0]}")
    split_list = cat.split_names() if splits == "all" else [s.strip() for s in splits.split(",") if s.strip()]
    for s in split_list:
        if s not in cat.split_names():
            raise UserError(f"--splits: split '{s}' not in the data (present: {', '.join(cat.split_names())})")
    target = cat.indices(split_list)
    applied = as_fitted(algo, cat, target, list(m["classes"]))
    if not quiet:
        log(f"protecting {len(target)} images ({', '.join(split_list)}) of {source} like {like} ('{m['method']}', "
            f"key {key.fingerprint}, fitted at {hw[1]}x{hw[0]}, no refit)")
    info: dict[str, Any] = {}
    if isinstance(pert, ClusterPerturbation):
        pert, info = assign_clusters(algo, pert, extra, cat.imageset(target, size=hw), device)
    reused = {"from": str(like), "from_manifest_sha256": sha256_file(like / MANIFEST), **info}
    job = {"target": set(target), "hw": hw, "image_format": fmt, "t0": t0, "fit_s": time.perf_counter() - t0}
    return _write(out, force, cat, job, pert, applied, m["method"], algo.params, key, False, Path(key_path),
                  split_list, source, seed, test_fraction, size, quiet, {"reused": reused})
