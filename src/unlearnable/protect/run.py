"""``unlearnable protect``: load a source, protect it, write it back in the same format with a manifest."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..audit.metrics import perturbation_stats
from ..data import ImageSet, load, save
from ..errors import UserError
from ..log import log, warn
from ..train import distributed as D
from ..utils import atomic_dir, check_output_free, sha256_file, write_json
from .base import METHODS, make_params, protect, select
from .keys import Key, load_key, load_or_create_key, save_key
from .like import seal_for_reuse

MANIFEST = "manifest.json"


def tree_digest(paths: Sequence[Path], root: Path) -> str:
    """SHA-256 over (relative path, file SHA-256) pairs: one fingerprint for a whole folder of images."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(f"{p.relative_to(root)}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


def source_digest(ds: ImageSet) -> str:
    src = ds.meta.get("source")
    if ds.meta.get("format") in ("npz",) and src:
        return sha256_file(src)
    if ds.meta.get("relpaths") and src:
        root = Path(src)
        return tree_digest([root / r for r in ds.meta["relpaths"]], root)
    h = hashlib.sha256(ds.images.numpy().tobytes())
    h.update(ds.labels.numpy().tobytes())
    return h.hexdigest()


def default_key_path(out: Path) -> Path:
    return out.parent / f"{out.name}.key"


def protect_source(
    source: str,
    method: str,
    out: str | os.PathLike,
    key_path: str | os.PathLike | None = None,
    splits: str = "train",
    params: Mapping[str, Any] | None = None,
    force: bool = False,
    device: str = "cpu",
    size: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    progress: bool = False,
    quiet: bool = False,
    resume: bool = False,
    review: Callable[..., tuple[ImageSet, Any, Any, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Run the whole protect job; returns the manifest. Nothing is written if any step fails.

    DDP-aware: under torchrun/SLURM/LSF every rank loads the data and takes part in ``fit`` (methods that train,
    such as UC, shard their batches); rank 0 alone writes, the others wait. Methods with a ``checkpoint_dir``
    checkpoint every epoch into ``.OUT.partial/`` beside the output; ``resume`` continues from there (the key
    of an interrupted run is kept there too, mode 0600, until the output is complete).

    ``review(ds, protected, perturbation, method, refit)`` (e.g. ``--verify``/``--target-acc``, built by
    :mod:`unlearnable.audit.verify`) runs on every rank after the fit and before anything is written; it may
    replace the protection (``refit(overrides)`` re-fits with other parameters) and returns manifest entries.
    """
    out = Path(out)
    cls = METHODS.get(method)
    p = make_params(cls, params or {})  # fail on bad parameters before any work
    check_output_free(out, force)
    kpath = Path(key_path) if key_path else default_key_path(out)
    if kpath.resolve().is_relative_to(out.resolve()):
        raise UserError(f"--key {kpath}: the key must not be stored inside the output folder")
    info = D.init_from_env(device)
    device = info.device if info.distributed else device
    work = partial_dir(out)
    t0 = time.perf_counter()
    ds = load(source, size=size, seed=seed, test_fraction=test_fraction, progress=progress)
    split_list = ds.split_names() if splits == "all" else [s.strip() for s in splits.split(",") if s.strip()]
    algo = cls(params=p, device=device, progress=progress)
    n_target = len(select(ds, algo, split_list))  # validate before any work or any file (a parked key included)
    if review is not None and hasattr(review, "check"):
        review.check(ds)
    checkpoints = hasattr(cls, "checkpoint_dir")
    key, created = _key_for_run(kpath, work, resume, park=checkpoints)
    say = (lambda m: None) if quiet else log
    say(f"protecting {n_target} images ({', '.join(split_list)}) of {source} with '{method}' "
        f"(key {key.fingerprint}, {info.world_size} process(es), device {device})")
    if checkpoints:
        algo.checkpoint_dir = work
        if resume and work.is_dir():
            say(f"resuming from checkpoints in {work}")
    def refit(overrides: Mapping[str, Any]) -> tuple[ImageSet, Any, Any]:
        a = cls(params=make_params(cls, {**(params or {}), **overrides}), device=device, progress=progress)
        prot, pe = protect(ds, a, key=key, splits=split_list, return_perturbation=True)
        return prot, pe, a

    extra: dict[str, Any] = {}
    try:
        protected, pert = protect(ds, algo, key=key, splits=split_list, return_perturbation=True)
        if review is not None:
            protected, pert, algo, extra = review(ds, protected, pert, algo, refit)
            p = algo.params
    except UserError:
        if D.is_main():  # bad input: leave nothing behind (an interruption keeps its checkpoints for --resume)
            shutil.rmtree(work, ignore_errors=True)
        raise
    elapsed = time.perf_counter() - t0
    if not D.is_main():  # rank 0 alone writes; the others wait until the output is in place
        D.barrier()
        return {}
    try:
        manifest = _write(out, force, ds, protected, pert, algo, method, p, key, created, kpath, split_list,
                          source, seed, test_fraction, size, elapsed, quiet, extra)
    finally:
        D.barrier()
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def partial_dir(out: Path) -> Path:
    """Where checkpoints of an unfinished protect run live: ``.OUT.partial/`` beside ``OUT``."""
    return out.parent / f".{out.name}.partial"


def _key_for_run(kpath: Path, work: Path, resume: bool, park: bool) -> tuple[Key, bool]:
    """Rank 0 loads or creates the key and shares it; a new key is parked in ``work`` so ``--resume`` finds it."""
    parked = work / "key"
    if D.is_main():
        if not resume and work.exists():
            shutil.rmtree(work)  # a fresh run never mixes with old checkpoints
        if not kpath.exists() and resume and parked.is_file():
            key, created = load_key(parked), True
        else:
            key, created = load_or_create_key(kpath)
            if created and park:
                work.mkdir(parents=True, exist_ok=True)
                if not parked.exists():
                    save_key(key, parked)
        secret = key.secret
    else:
        secret, created = b"", False
    secret, created = D.broadcast_object((secret, created))
    return Key(secret), created


def _write(out: Path, force: bool, ds: ImageSet, protected: ImageSet, pert: Any, algo: Any, method: str, p: Any,
           key: Key, created: bool, kpath: Path, split_list: list[str], source: str, seed: int,
           test_fraction: float, size: int | None, elapsed: float, quiet: bool,
           extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    say = (lambda m: None) if quiet else log
    metrics = {}
    for s in ds.split_names():
        idx = ds.indices(s)
        metrics[s] = perturbation_stats(ds.images[idx], protected.images[idx])
    with atomic_dir(out, force) as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = save(protected, tmp, original=ds)
        data_rel = _data_entry(protected, files, tmp)
        manifest = {
            "unlearnable_version": __version__,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "method": method,
            "params": {f: getattr(p, f) for f in p.__dataclass_fields__},
            "key_fingerprint": key.fingerprint,
            "splits_protected": split_list,
            "source": {"path": str(source), "format": ds.meta.get("format"), "sha256": source_digest(ds)},
            "load": {"data": data_rel, "format": ds.meta.get("format") if ds.meta.get("format") != "builtin"
                     else "npz", "seed": seed, "test_fraction": test_fraction, "size": size},
            "counts": {s: int(len(ds.indices(s))) for s in ds.split_names()},
            "classes": list(ds.classes),
            "image_shape": list(ds.images.shape[1:]),
            "metrics": metrics,
            "linf_budget": algo.linf_budget(),
            "time_s": round(elapsed, 3),
        }
        if hasattr(pert, "save_artifacts"):  # e.g. UC's clusters.csv
            files = files + pert.save_artifacts(tmp)
        if getattr(pert, "report", None):
            manifest["fit"] = pert.report
        state, manifest["like"] = seal_for_reuse(tmp, method, manifest["params"], pert, key, ds)  # protect --like
        files = files + state
        manifest.update(extra or {})
        manifest["output"] = {"sha256": {str(f.relative_to(tmp)): sha256_file(f) for f in files}}
        write_json(tmp / MANIFEST, manifest)
        if created:
            save_key(key, kpath)
    for w in caught:
        warn(str(w.message))
    if created and not quiet:
        warn(f"new key written to {kpath} (mode 0600): keep it secret and keep it safe; it regenerates this "
             f"protection")
    say(f"wrote {out} ({len(files)} file(s)); manifest: {out / MANIFEST}")
    return manifest


def _data_entry(ds: ImageSet, files: list[Path], root: Path) -> str:
    if ds.meta.get("format") in ("npz", "builtin"):
        return str(files[0].relative_to(root))
    if ds.meta.get("format") == "pets":
        return "oxford-iiit-pet"
    if ds.meta.get("format") == "flowers102":
        return "flowers-102"
    return "."


def load_output(path: str | os.PathLike, progress: bool = False) -> tuple[ImageSet, dict[str, Any] | None]:
    """Load a protect output folder (via its manifest) or any plain source; returns (data, manifest or None)."""
    import json

    p = Path(path)
    if p.is_dir() and (p / MANIFEST).is_file():
        try:
            m = json.loads((p / MANIFEST).read_text())
            spec = m["load"]
        except (ValueError, KeyError) as e:
            raise UserError(f"{p / MANIFEST}: unreadable manifest ({e})") from None
        ds = load(p / spec["data"], format=spec["format"], size=spec.get("size"), seed=spec.get("seed", 0),
                  test_fraction=spec.get("test_fraction", 0.2), progress=progress)
        return ds, m
    return load(path, progress=progress), None
