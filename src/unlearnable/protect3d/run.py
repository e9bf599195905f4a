"""``unlearnable protect SUBJECTS``: protect the training subjects of a 3D segmentation dataset.

Every rank loads the subjects and takes part in the fit (surrogate training is DDP; noise is descended per rank on
its shard of subjects). Subjects are then sharded over ranks, and each rank writes its subjects into the working
output ``.OUT.partial/out/`` as they finish, with a record in ``.OUT.partial/done/``; rank 0 writes the manifest
and moves the finished folder into place. An interrupted run keeps ``.OUT.partial/`` (surrogate checkpoint,
finished subjects, a new key parked there) and ``--resume`` continues: finished subjects are not redone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._version import __version__
from ..data.subjects import load_subjects, split_by_id
from ..errors import UserError
from ..log import log, warn
from ..protect.base import make_params
from ..protect.keys import save_key
from ..protect.run import MANIFEST, _key_for_run, check_paths, partial_dir
from ..runtime import distributed as D
from ..utils import atomic_dir, keep_or_remove, sha256_file, write_json
from .base import VOLUME_METHODS
from .budget import RULE
from .layout import plan, write_subject


def assign_splits(splits: tuple[str, ...], ids: tuple[str, ...], seed: int, test_fraction: float) -> list[str]:
    """A CSV's own ``split`` column when it names more than one split; otherwise a seeded split by subject id."""
    if len(set(splits)) > 1:
        return list(splits)
    return split_by_id(ids, test_fraction, seed)


def protect_subjects(source: str, method: str, out: str | os.PathLike, key_path: str | os.PathLike | None = None,
                     splits: str = "train", params: Mapping[str, Any] | None = None, force: bool = False,
                     device: str = "cpu", seed: int = 0, test_fraction: float = 0.25, resume: bool = False,
                     quiet: bool = False) -> dict[str, Any]:
    """Protect the subjects of ``splits`` of ``source`` with a 3D ``method``; returns the manifest (rank 0).

    Nothing is written at ``out`` unless every subject was written; bad input leaves nothing behind.
    """
    out = Path(out)
    cls = VOLUME_METHODS.get(method)
    p = make_params(cls, params or {})  # type: ignore[arg-type]
    kpath = check_paths(source, out, key_path, force)
    info = D.init_from_env(device)
    device = info.device if info.distributed else device
    t0 = time.perf_counter()
    s = load_subjects(source, pad=True)  # subjects of different shapes: fitted padded, written at their own shape
    s = s.with_splits(assign_splits(s.splits, s.ids, seed, test_fraction))
    want = sorted(set(s.splits)) if splits == "all" else [x.strip() for x in splits.split(",") if x.strip()]
    for w in want:
        if w not in s.splits:
            raise UserError(f"--splits: split '{w}' not in the subjects (present: {', '.join(sorted(set(s.splits)))})")
    files, extra = plan(source, s)
    target = [i for i, sp in enumerate(s.splits) if sp in want]
    work = partial_dir(out)
    key, created = _key_for_run(kpath, work, resume, park=True)
    job = {"method": method, "params": {f: getattr(p, f) for f in p.__dataclass_fields__},
           "key_fingerprint": key.fingerprint, "source": str(source), "ids": list(s.ids), "splits": list(s.splits)}
    if D.is_main():
        _check_job(work, job)
    D.barrier()
    say = (lambda m: None) if quiet else log
    say(f"protecting {len(target)} of {len(s)} subjects ({', '.join(want)}) of {source} with '{method}' at eps "
        f"{p.eps * 255:.4g}/255 (key {key.fingerprint}, {info.world_size} process(es), device {device})")
    algo = cls(params=p, device=device)
    train = s.subset(target)
    pos = {i: k for k, i in enumerate(target)}
    tmp = work / "out"
    try:
        state = algo.fit(train, key, work)
        t_fit = time.perf_counter() - t0
        for i in D.shard_indices(len(s)):
            done = work / "done" / f"{i:05d}.json"
            if done.is_file():
                continue
            delta = algo.delta(state, train, pos[i]) if i in pos else None
            if delta is not None:  # the padding (if any) is dropped: each volume keeps its own grid
                d, h, w = s.native_shape(i)
                delta = delta[:, :d, :h, :w]
            write_json(done, write_subject(files[i], s, i, delta, p.eps, tmp))  # the record last: it marks "done"
        D.barrier()
    except UserError:
        if D.is_main():
            shutil.rmtree(work, ignore_errors=True)
        raise
    except BaseException:
        if D.is_main():
            keep_or_remove(work, "re-run with --resume to continue")
        raise
    if not D.is_main():
        D.barrier()
        return {}
    try:
        manifest = _finish(out, force, work, tmp, s, job, getattr(state, "report", {}), extra, want,
                           algo.linf_budget(), t0, t_fit)
        if created:
            save_key(key, kpath)
    finally:
        D.barrier()
    shutil.rmtree(work, ignore_errors=True)
    if created and not quiet:
        warn(f"new key written to {kpath} (mode 0600): keep it secret and keep it safe; it regenerates this "
             "protection")
    q = manifest["metrics"]
    say(f"wrote {out}: {q['protected']} protected subject(s), 3D PSNR {q['psnr_db_mean']} dB, SSIM "
        f"{q['ssim_mean']}; manifest: {out / MANIFEST}")
    return manifest


def _check_job(work: Path, job: dict[str, Any]) -> None:
    """Record what this run protects; a resumed run must be the same job (same method, parameters, key, data)."""
    path = work / "job.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(job)):
            raise UserError(f"{path}: the interrupted run protected with other settings (method, parameters, key or "
                            "subjects); rerun without --resume")
    else:
        write_json(path, job)


def _finish(out: Path, force: bool, work: Path, tmp: Path, s: Any, job: dict[str, Any], report: dict[str, Any],
            extra: list[tuple[Path, str]], want: list[str], eps: float, t0: float, t_fit: float) -> dict[str, Any]:
    """Manifest, extra files (the CSV), and the atomic move of the finished folder to ``out``."""
    recs = [json.loads((work / "done" / f"{i:05d}.json").read_text()) for i in range(len(s))]
    with atomic_dir(out, force) as final:
        for entry in tmp.iterdir():
            os.replace(entry, final / entry.name)
        digests = {k: v for r in recs for k, v in r.pop("sha256").items()}
        for src, name in extra:
            shutil.copyfile(src, final / name)
            digests[name] = sha256_file(final / name)
        prot = [r for r in recs if r["protected"]]
        psnrs = [r["psnr_db"] for r in prot if r.get("psnr_db") is not None]
        manifest = {
            "unlearnable_version": __version__,
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "kind": "subjects",
            "method": job["method"], "params": job["params"], "key_fingerprint": job["key_fingerprint"],
            "splits_protected": want,
            "source": {"path": job["source"], "format": s.meta.get("format"), "modalities": list(s.modalities),
                       "shape": list(s.shape), "labels": s.meta.get("labels")}
            # subjects of different shapes: "shape" is the common extent they were fitted at (zero-padded), and
            # every volume was written at its own shape, listed here
            | ({"native_shapes": dict(zip(s.ids, s.meta["native_shapes"], strict=True))}
               if s.meta.get("native_shapes") else {}),
            "load": {"data": extra[0][1] if extra else ".", "kind": "subjects"},
            "budget_rule": RULE, "linf_budget": eps,
            "splits": dict(zip(s.ids, s.splits, strict=True)),
            "subjects": {r.pop("id"): r for r in recs},
            "metrics": {"protected": len(prot), "copied": len(recs) - len(prot),
                        "psnr_db_mean": round(sum(psnrs) / len(psnrs), 3) if psnrs else None,
                        "ssim_mean": round(sum(r["ssim"] for r in prot) / len(prot), 5) if prot else None},
            "fit": report, "fit_s": round(t_fit, 3), "time_s": round(time.perf_counter() - t0, 3),
            "output": {"sha256": digests},
        }
        write_json(final / MANIFEST, manifest)
    return manifest
