"""``unlearnable protect``: load a source, protect it, write it back in the same format with a manifest."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._version import __version__
from ..data import ImageSet, load
from ..data.formats.catalog import Catalog
from ..data.formats.images import ImageFormat, parse_image_format
from ..data.io import open_catalog
from ..errors import UserError
from ..log import log, warn
from ..runtime import distributed as D
from ..runtime.precision import Accel
from ..utils import atomic_dir, check_output_free, check_separate, keep_or_remove, sha256_file, write_json
from .base import METHODS, make_params, select
from .keys import Key, load_key, load_or_create_key, save_key
from .native import working_size
from .sealed import seal_for_reuse
from .stream import PassStart, sharded, stream_protect

MANIFEST = "manifest.json"


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
    image_format: str = "png",
    work_size: int | None = None,
    review: Callable[..., tuple[Any, Any, dict[str, Any]]] | None = None,
    accel: Accel | None = None,
) -> dict[str, Any]:
    """Run the whole protect job; returns the manifest. Nothing is written if any step fails.

    The source is listed, not loaded: the method fits on a working view of the samples to protect (their common
    size, else ``size`` or ``work_size``; no pixels at all for methods whose fit needs none), then one streamed
    pass applies it at each image's native size, measures, writes and hashes chunk by chunk (bounded memory).
    ``image_format`` (``png``, ``keep``, ``jpeg:Q``) says how protected images are encoded; see
    :mod:`unlearnable.data.formats.images`.

    DDP-aware: under torchrun/SLURM/LSF every rank loads the data and takes part in ``fit`` (methods that train,
    such as UC, shard their batches). Sources written file by file are then written by every rank, each its share
    of the files (:mod:`unlearnable.protect.stream`); rank 0 alone writes the manifest and moves the output into
    place (and writes a ``.npz`` archive alone). Methods with a ``checkpoint_dir``
    checkpoint every epoch into ``.OUT.partial/`` beside the output; ``resume`` continues from there (the key
    of an interrupted run is kept there too, mode 0600, until the output is complete).

    ``review(data, method, fit, work)`` (``--verify``/``--target-acc``, built by :mod:`unlearnable.audit.verify`)
    runs on every rank in place of the plain fit, on every split at the working size: it fits through
    ``fit(overrides)`` (``{}``: as asked; e.g. ``{"eps": ...}`` for a budget search), verifies (its victims checkpoint
    under ``work``), and returns the perturbation and method to write plus manifest entries.
    ``review.check(data, method)`` runs on a pixel-free view before any work.
    """
    out = Path(out)
    cls = METHODS.get(method)
    p = make_params(cls, params or {})  # fail on bad parameters before any work
    kpath = check_paths(source, out, key_path, force)
    info = D.init_from_env(device)
    device = info.device if info.distributed else device
    work = partial_dir(out)
    t0 = time.perf_counter()
    fmt = parse_image_format(image_format)
    cat = open_catalog(source, seed=seed, test_fraction=test_fraction)
    split_list = cat.split_names() if splits == "all" else [s.strip() for s in splits.split(",") if s.strip()]
    algo = cls(params=p, device=device, progress=progress, accel=accel)
    # validate before any work or any file (a parked key included), on a view without pixels
    shapes = cat.imageset(size=(1, 1), pixels=False)
    target = select(shapes, algo, split_list).tolist()
    if review is not None and hasattr(review, "check"):
        review.check(shapes, algo)
    hw = working_size([cat.sizes[i] for i in target], size, work_size)
    n_target = len(target)
    checkpoints = hasattr(cls, "checkpoint_dir")
    resuming = resume and work.is_dir()  # an earlier run's checkpoints: never removed by this run's failure
    # a run that checkpoints (the method's fit, or the --verify victims) parks a new key where --resume finds it
    key, created = _key_for_run(kpath, work, resume, park=checkpoints or review is not None)
    say = (lambda m: None) if quiet else log
    say(f"protecting {n_target} images ({', '.join(split_list)}) of {source} with '{method}' "
        f"(key {key.fingerprint}, {info.world_size} process(es), device {device}, fitted at {hw[1]}x{hw[0]})")
    if checkpoints:
        algo.checkpoint_dir = work
        if resume and work.is_dir():
            say(f"resuming from checkpoints in {work}")
    try:
        extra: dict[str, Any] = {}
        if review is None:
            pert = algo.fit(cat.imageset(target, size=hw, pixels=algo.fit_reads_pixels), key)
        else:
            pert, algo, extra = _review(review, cat, target, hw, algo, key, params or {}, fmt, work)
            p = algo.params
    except UserError:
        if D.is_main() and not resuming:  # bad input: leave nothing behind (an interruption keeps its checkpoints)
            shutil.rmtree(work, ignore_errors=True)
        elif D.is_main():  # a damaged checkpoint refused on --resume: the good ones beside it stay
            keep_or_remove(work, "re-run with --resume to continue")
        raise
    except BaseException:
        if D.is_main():  # kept only if it holds a parked key or checkpoints; the error line then names it
            keep_or_remove(work, "re-run with --resume to continue")
        raise
    elapsed = time.perf_counter() - t0
    start = PassStart(sharded(cat))
    if not D.is_main():  # rank 0 writes the manifest; the others write their share of the files, if sharded
        try:
            where = start.receive()
            if where is not None:
                stream_protect(cat, where, algo, pert, set(target), hw, size, fmt)
        finally:
            D.barrier()
        return {}
    try:
        job = {"target": set(target), "hw": hw, "image_format": fmt, "t0": t0, "fit_s": elapsed, "start": start}
        manifest = _write(out, force, cat, job, pert, algo, method, p, key, created, kpath, split_list,
                          source, seed, test_fraction, size, quiet, extra)
    finally:
        start.send(None)  # a no-op once the pass started; else the other ranks learn there will be none
        D.barrier()
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _review(review: Callable[..., Any], cat: Catalog, target: list[int], hw: tuple[int, int], algo: Any,
            key: Key, params: Mapping[str, Any], fmt: ImageFormat, work: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Run ``review`` on an in-memory view of every split at the working size (victims need one size; it is decoded
    once and also serves the fits); returns the perturbation and method to write, and manifest entries. The victims
    see the protected images as they will be read back from the files (``Catalog.as_written``): a JPEG output is
    verified as JPEG. Their per-epoch checkpoints go under ``work/verify/`` (``--resume`` continues them)."""
    import torch

    view = cat.imageset(size=hw)
    idx = torch.tensor(target, dtype=torch.long)
    cls = type(algo)

    def fit(overrides: Mapping[str, Any]) -> tuple[ImageSet, Any, Any]:
        a = algo if not overrides else cls(params=make_params(cls, {**params, **overrides}), device=algo.device,
                                           progress=algo.progress, accel=algo.accel)
        train = view.subset(idx)
        pe = a.fit(train if a.fit_reads_pixels else cat.imageset(target, size=hw, pixels=False), key)
        return view.with_images(cat.as_written(target, a.apply(train, pe), fmt), idx), pe, a

    return review(view, algo, fit, work / "verify")


def check_paths(source: str, out: Path, key_path: str | os.PathLike | None, force: bool) -> Path:
    """Refuse an existing output (unless ``force``), a key inside it, or either inside the source; the key path."""
    check_output_free(out, force)
    kpath = Path(key_path) if key_path else default_key_path(out)
    if kpath.resolve().is_relative_to(out.resolve()):
        raise UserError(f"--key {kpath}: the key must not be stored inside the output folder")
    check_separate({"SOURCE": source}, {"--out": out, "--key": kpath})
    return kpath


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


def _write(out: Path, force: bool, cat: Catalog, job: dict[str, Any], pert: Any, algo: Any, method: str, p: Any,
           key: Key, created: bool, kpath: Path, split_list: list[str], source: str, seed: int,
           test_fraction: float, size: int | None, quiet: bool,
           extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    say = (lambda m: None) if quiet else log
    fmt, hw = job["image_format"], job["hw"]
    with atomic_dir(out, force) as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if job.get("start") is not None:
            job["start"].send(tmp)  # the other ranks of a sharded pass write into the same folder
        res = stream_protect(cat, tmp, algo, pert, job["target"], hw, size, fmt,
                             progress=bool(getattr(algo, "progress", False)) and not quiet)
        if res.lossy_written:
            warnings.warn(f"--image-format {fmt}: {res.lossy_written} protected image(s) were saved lossily, which "
                          f"erases part of the perturbation (the metrics measure what was written; png keeps it "
                          f"all)", stacklevel=1)
        files = [tmp / _data_root(cat) / r for r in res.files] if cat.format not in ("npz", "builtin") else \
            [tmp / r for r in res.files]
        sizes = {tuple(s) for s in cat.sizes}
        manifest = {
            "unlearnable_version": __version__,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "method": method,
            "params": {f: getattr(p, f) for f in p.__dataclass_fields__},
            "key_fingerprint": key.fingerprint,
            "splits_protected": split_list,
            "source": {"path": str(source), "format": cat.format, "sha256": res.source_sha256},
            "load": {"data": _data_entry(cat, res.files), "format": cat.format if cat.format != "builtin"
                     else "npz", "seed": seed, "test_fraction": test_fraction, "size": size},
            "counts": {s: len(cat.indices(s)) for s in cat.split_names()},
            "classes": list(cat.classes),
            "image_shape": [cat.channels, size, size] if size else (
                [cat.channels, *next(iter(sizes))] if len(sizes) == 1 else [cat.channels, None, None]),
            "images": {"size": f"{size}x{size} (resized, --size)" if size else "native",
                       "fit_size": list(hw), "native_fit": algo.size_free or len(sizes) == 1 or bool(size),
                       "image_format": str(fmt)},
            "metrics": res.metrics,
            "linf_budget": algo.linf_budget(),
            "time_s": round(time.perf_counter() - job["t0"], 3),
            "fit_s": round(job["fit_s"], 3),
            "runtime": {"device": algo.device, "world_size": D.world_size(),
                        "sync_bn": D.sync_bn_state(algo.accel.sync_bn)} | algo.accel.record(algo.device),
        }
        if hasattr(pert, "save_artifacts"):  # e.g. UC's clusters.csv
            files = files + pert.save_artifacts(tmp)
        if getattr(pert, "report", None):
            manifest["fit"] = pert.report
        state, manifest["like"] = seal_for_reuse(tmp, method, manifest["params"], pert, key, cat, hw)  # --like
        files = files + state
        manifest.update(extra or {})
        digests = {str(f.relative_to(tmp)): d for f, d in zip(files, res.files.values())}
        digests |= {str(f.relative_to(tmp)): sha256_file(f) for f in files[len(res.files):]}
        manifest["output"] = {"sha256": digests}
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


def _data_root(cat: Catalog) -> str:
    return getattr(cat, "prefix", "")


def _data_entry(cat: Catalog, files: dict[str, str]) -> str:
    if cat.format in ("npz", "builtin"):
        return next(iter(files))
    return _data_root(cat) or "."


def load_output(path: str | os.PathLike, progress: bool = False, size: int | None = None,
                fit_mixed: bool = False) -> tuple[ImageSet, dict[str, Any] | None]:
    """Load a protect output folder (via its manifest) or any plain source; returns (data, manifest or None).

    ``size`` resizes every image to ``size x size`` (default: the manifest's ``--size``, else native). With
    ``fit_mixed``, images of differing sizes (native Pets/Flowers102 outputs) are resized to the size the protection
    was fitted at (the manifest's ``fit_size``; :func:`~unlearnable.protect.native.default_work_size` without
    one) instead of being refused; ``meta["size_note"]`` then says so, for the command to print and record.
    """
    import json

    from ..data.io import detect_format, open_catalog
    from .native import default_work_size

    p = Path(path)
    src, fmt, manifest, kw = str(path), None, None, {}
    if p.is_dir() and (p / MANIFEST).is_file():
        try:
            manifest = json.loads((p / MANIFEST).read_text())
            spec = manifest["load"]
            src, fmt = str(p / spec["data"]), spec["format"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{p / MANIFEST}: unreadable manifest ({e})") from None
        kw = {"seed": spec.get("seed", 0), "test_fraction": spec.get("test_fraction", 0.2)}
        size = size or spec.get("size")
    note = None
    if size is None and fit_mixed and (fmt or detect_format(src)) not in ("npz", "builtin"):  # those are uniform
        every = open_catalog(src, format=fmt, **kw).sizes
        sizes = sorted(set(every))
        if len(sizes) > 1:
            fit = ((manifest or {}).get("images") or {}).get("fit_size") or [default_work_size(every)] * 2
            size = int(max(fit))
            where = "the size the protection was fitted at" if manifest else "the default working size"
            note = (f"images come in {len(sizes)} sizes ({sizes[0][1]}x{sizes[0][0]} to {sizes[-1][1]}x"
                    f"{sizes[-1][0]}): resized to {size}x{size} on load, {where} (--size N to choose)")
    ds = load(src, format=fmt, size=size, progress=progress, **kw)
    if note:
        ds.meta["size_note"] = note
    return ds, manifest
