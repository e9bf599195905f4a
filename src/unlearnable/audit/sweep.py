"""The batch-size study: a grid of (dataset x method x config keys) cells, one ``results.json`` per cell.

A study file (YAML) names ``datasets`` (name -> source), ``methods`` (name -> protect parameters), a ``grid`` of
config keys to vary and ``fixed`` settings. Config keys are ``seed``, ``protect.<method parameter>`` (e.g. UC's
``protect.batch_size``, the batch used to learn the perturbations, Zhu et al. 2025), ``evaluate.<recipe field>``
(the victim, e.g. ``evaluate.batch_size``) and ``data.train_limit`` / ``data.test_limit``. Cells run through
:func:`~unlearnable.audit.cells.run_cells` (finished cells are skipped); protected data is cached under
``cache/`` and shared by cells with the same protect config. Results merge into ``sweep.csv``; the report draws
the accuracy-vs-batch-size figure from it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import UserError
from ..log import log
from ..registry import did_you_mean
from ..runtime import distributed as D
from ..utils import write_text
from .cells import cell_name, is_done, load_cell, run_cells
from .validity import baseline_valid

TOP_KEYS = ("name", "out", "datasets", "methods", "grid", "fixed")
DATA_KEYS = ("data.train_limit", "data.test_limit", "data.size")
CSV_FIRST = ["dataset", "method", "batch_size", "seed", "clean_acc", "protected_acc", "valid", "sync_bn", "precision"]


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    out: Path
    datasets: dict[str, str]
    methods: dict[str, dict[str, Any]]
    grid: dict[str, list[Any]]
    fixed: dict[str, Any]

    def cells(self) -> list[dict[str, Any]]:
        """Every cell in a stable order: dataset, method, then the grid keys in file order."""
        from .cells import expand_grid

        axes = {"dataset": list(self.datasets), "method": list(self.methods)} | self.grid
        return expand_grid(axes, {"seed": 0} | self.fixed)

    def varied(self) -> list[str]:
        return ["dataset", "method", *self.grid]


def load_study(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Study:
    """Read and check a study file; every mistake is a one-line UserError before anything runs."""
    from ..data.io import detect_format
    from ..protect.base import METHODS, make_params
    from ..train.loop import Recipe

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: study file not found")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{p}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    for k in raw:
        if k not in TOP_KEYS:
            raise UserError(f"{p}: unknown key '{k}'{did_you_mean(k, TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    for k in ("datasets", "methods"):
        if not raw.get(k):
            raise UserError(f"{p}: '{k}' is missing or empty")
    ds = raw["datasets"]
    datasets = {str(d): str(d) for d in ds} if isinstance(ds, list) else {str(k): str(v) for k, v in ds.items()}
    for name, src in datasets.items():
        src_path = src if Path(src).is_absolute() or not (p.parent / src).exists() else str(p.parent / src)
        datasets[name] = src_path
        detect_format(src_path)  # missing paths and unknown formats fail here
    ms = raw["methods"]
    methods = {str(m): {} for m in ms} if isinstance(ms, list) else {str(k): dict(v or {}) for k, v in ms.items()}
    grid = {str(k): (list(v) if isinstance(v, list) else [v]) for k, v in (raw.get("grid") or {}).items()}
    fixed = {str(k): v for k, v in (raw.get("fixed") or {}).items()}
    recipe_fields = [f.name for f in dataclasses.fields(Recipe)]
    for k in [*grid, *fixed]:
        if k == "seed" or k in DATA_KEYS:
            continue
        if k.startswith("evaluate."):
            f = k.split(".", 1)[1]
            if f not in recipe_fields:
                raise UserError(f"{p}: unknown key '{k}'{did_you_mean(f, recipe_fields)}; victim keys: "
                                f"evaluate.{', evaluate.'.join(recipe_fields)}")
            continue
        if not k.startswith("protect."):
            allowed = ["seed", *DATA_KEYS, "protect.<param>", "evaluate.<field>"]
            hint = did_you_mean(k, ["seed", *DATA_KEYS, *(f"evaluate.{f}" for f in recipe_fields)])
            raise UserError(f"{p}: unknown key '{k}'{hint}; allowed: {', '.join(allowed)}")
    for m, params in methods.items():
        cls = METHODS.get(m)
        fields = {f.name for f in dataclasses.fields(cls.Params)}
        for k in [k for k in [*grid, *fixed] if k.startswith("protect.")]:
            if k.split(".", 1)[1] not in fields:
                raise UserError(f"{p}: method '{m}' has no parameter '{k.split('.', 1)[1]}'"
                                f"{did_you_mean(k.split('.', 1)[1], fields)}")
        make_params(cls, {k: str(v) for k, v in params.items()})
    out_dir = Path(out) if out is not None else Path(raw.get("out") or p.with_suffix(""))
    return Study(str(raw.get("name") or p.stem), out_dir, datasets, methods, grid, fixed)


def protect_config(study: Study, cell: Mapping[str, Any]) -> dict[str, Any]:
    """What determines the protected data of a cell (cells sharing it share the cached output)."""
    params = dict(study.methods[cell["method"]]) | {k.split(".", 1)[1]: v for k, v in cell.items()
                                                     if k.startswith("protect.")}
    return {"dataset": cell["dataset"], "source": study.datasets[cell["dataset"]], "method": cell["method"],
            "params": params, "seed": cell["seed"], "train_limit": cell.get("data.train_limit"),
            "size": cell.get("data.size")}


def _limited(ds: Any, split: str, limit: int | None, seed: int) -> torch.Tensor:
    idx = ds.indices(split)
    if limit is None or limit >= len(idx):
        return idx
    g = torch.Generator().manual_seed(seed)  # a fixed random subset keeps every class
    return idx[torch.randperm(len(idx), generator=g)[:int(limit)]].sort().values


def source_subset(study: Study, cell: Mapping[str, Any], cache: Path) -> str:
    """The cell's clean data as a source path: the dataset itself, or a cached npz of the limited subset."""
    from ..data import load, save

    src = study.datasets[cell["dataset"]]
    tl, el = cell.get("data.train_limit"), cell.get("data.test_limit")
    if tl is None and el is None:
        return src
    tag = hashlib.sha256(json.dumps([src, tl, el, cell.get("data.size")]).encode()).hexdigest()[:12]
    folder = cache / f"data-{cell['dataset']}-{tag}"
    if D.is_main() and not folder.is_dir():
        from ..utils import atomic_dir

        ds = load(src, size=cell.get("data.size"))
        idx = torch.cat([_limited(ds, s, tl if s == "train" else el, 0) for s in ds.split_names()])
        sub = ds.subset(idx)
        sub = dataclasses.replace(sub, meta=dict(sub.meta) | {"format": "npz", "name": cell["dataset"]})
        with atomic_dir(folder) as tmp:
            save(sub, tmp)
    D.barrier()
    return str(next(folder.glob("*.npz")))


def run_cell(study: Study, cell: Mapping[str, Any], cell_dir: Path, device: str) -> dict[str, Any]:
    """Protect (or reuse the cached protection), then audit with a victim; returns the results dict."""
    from ..data import load
    from ..protect.keys import Key, save_key
    from ..protect.run import MANIFEST, load_output, protect_source
    from ..train.loop import Recipe
    from .evaluate import evaluate

    cache = study.out / "cache"
    src = source_subset(study, cell, cache)
    pc = protect_config(study, cell) | {"source": src}
    tag = hashlib.sha256(json.dumps(pc, sort_keys=True, default=str).encode()).hexdigest()[:12]
    pdir = cache / f"{cell['dataset']}-{cell['method']}-{tag}"
    if not (pdir / MANIFEST).is_file():
        kpath = cache / f"{pdir.name}.key"
        if D.is_main() and not kpath.exists():  # a public key from the seed: the study is reproducible
            save_key(Key.from_seed(int(cell["seed"])), kpath)
        D.barrier()
        protect_source(src, cell["method"], pdir, kpath, "train", {k: str(v) for k, v in pc["params"].items()},
                       force=True, device=device, size=cell.get("data.size"), quiet=not D.is_main(), resume=True)
    prot, manifest = load_output(pdir)
    clean = load(src, size=cell.get("data.size"))
    rk = {k.split(".", 1)[1]: v for k, v in cell.items() if k.startswith("evaluate.")}
    recipe = Recipe(**({"seed": int(cell["seed"])} | rk))
    recipe.validate()
    res = evaluate(prot, clean, recipe, device, work_dir=cell_dir)
    res["protect"] = {"cache": pdir.name, "params": manifest["params"], "time_s": manifest["time_s"],
                      "fit_setup": (manifest.get("fit") or {}).get("generator", {}).get("setup")}
    for f in ("protected.ckpt", "clean.ckpt"):
        if D.is_main():
            (cell_dir / f).unlink(missing_ok=True)
    return res


def run_study(study: Study, device: str, only: int | None = None) -> list[dict[str, Any]]:
    """Run the unfinished cells (all, or only index ``only``); rank 0 writes each ``results.json``."""
    cells = study.cells()
    if only is not None:
        if not 0 <= only < len(cells):
            raise UserError(f"--cell {only}: the study has {len(cells)} cells (0..{len(cells) - 1})")
        cells = [cells[only]]
    keys = study.varied()

    def run(cell: dict[str, Any], d: Path) -> dict[str, Any]:
        log(f"cell {cell_name(cell, keys)}")
        out = run_cell(study, cell, d, device)
        D.barrier()
        return out

    # every rank takes part in training; run_cells lets rank 0 alone write the results
    return run_cells(cells, study.out / "cells", run, name_keys=keys,
                     on_skip=lambda c: log(f"skip finished cell {cell_name(c, keys)}"))


def status(study: Study) -> list[tuple[int, dict[str, Any], bool]]:
    keys = study.varied()
    return [(i, c, is_done(study.out / "cells" / cell_name(c, keys))) for i, c in enumerate(study.cells())]


def merge(study: Study) -> Path:
    """Write ``sweep.csv`` (one row per finished cell) and return its path; the report draws the figure from it."""
    keys = study.varied()
    rows = []
    for _, cell, done in status(study):
        if done:
            r = load_cell(study.out / "cells" / cell_name(cell, keys))
            bs = cell.get("protect.batch_size", cell.get("evaluate.batch_size"))
            valid, _ = baseline_valid(r["clean_acc"], r["chance_acc"])
            rows.append({"dataset": cell["dataset"], "method": cell["method"], "batch_size": bs,
                         "seed": cell["seed"], "clean_acc": r["clean_acc"], "protected_acc": r["protected_acc"],
                         "valid": "yes" if valid else "no",
                         # per-rank or global batch statistics matter to a batch-size study (issue 14)
                         "sync_bn": r.get("setup", {}).get("sync_bn", "off"),
                         "precision": r.get("recipe", {}).get("precision", "fp32")}
                        | {k: cell[k] for k in keys if k not in ("dataset", "method", "seed")})
    cols = CSV_FIRST + [k for k in keys if k not in CSV_FIRST]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return write_text(study.out / "sweep.csv", buf.getvalue())
