"""The batch-size study: a grid of (dataset x method x config keys) cells, one ``results.json`` per cell.

A study file (YAML) names ``datasets`` (name -> source), ``methods`` (name -> protect parameters), a ``grid`` of
config keys to vary and ``fixed`` settings. Config keys are ``seed``, ``protect.<method parameter>`` (e.g. UC's
``protect.batch_size``, the batch used to learn the perturbations, Zhu et al. 2025), ``evaluate.<recipe field>``
(the victim, e.g. ``evaluate.batch_size``) and ``data.train_limit`` / ``data.test_limit``. Cells run through
:func:`~unlearnable.audit.cells.run_cells` (finished cells are skipped); protected data is cached under
``cache/`` and shared by cells with the same protect config, and so is each clean victim: cells with the same
(data, victim recipe, seed, world size) reuse one clean baseline instead of retraining it. An optional
``surrogate`` section trains, once per dataset, a feature extractor on the training images the cells do *not* use
(those left out by ``data.train_limit``) and hands it to every method that takes ``surrogate_weights`` (UC): the
study's stand-in for an off-the-shelf extractor that knows the domain but never saw the protected images. Results
merge into ``sweep.csv``; the report draws the accuracy-vs-batch-size figure from it.
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
from ..utils import write_json, write_text
from .cells import cell_name, is_done, load_cell, run_cells
from .validity import baseline_valid

TOP_KEYS = ("name", "out", "datasets", "methods", "grid", "fixed", "surrogate")
SURROGATE_KEYS = {"model": "smallcnn", "epochs": 3, "batch_size": 64, "lr": 0.05, "images": 0}
DATA_KEYS = ("data.train_limit", "data.test_limit", "data.size")
DEFENSE_KEY = "evaluate.defense"  # training-time augmentation/defence of both victims, e.g. "aug:4" (crop+flip)
CSV_FIRST = ["dataset", "method", "batch_size", "seed", "clean_acc", "protected_acc", "protected_best_acc",
             "chance_acc", "protected_balanced_acc", "valid", "sync_bn", "precision", "lr_scaling", "cluster_purity"]


@dataclasses.dataclass(frozen=True)
class Study:
    name: str
    out: Path
    datasets: dict[str, str]
    methods: dict[str, dict[str, Any]]
    grid: dict[str, list[Any]]
    fixed: dict[str, Any]
    surrogate: dict[str, Any] = dataclasses.field(default_factory=dict)  # empty: no study-trained surrogate

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
        if k == DEFENSE_KEY:
            from ..train.defenses import parse_defenses

            for v in (grid.get(k) or [fixed.get(k)]):
                parse_defenses(_defense_list(v))
            continue
        if k.startswith("evaluate."):
            f = k.split(".", 1)[1]
            if f not in recipe_fields:
                raise UserError(f"{p}: unknown key '{k}'{did_you_mean(f, [*recipe_fields, 'defense'])}; victim "
                                f"keys: evaluate.{', evaluate.'.join([*recipe_fields, 'defense'])}")
            continue
        if not k.startswith("protect."):
            allowed = ["seed", *DATA_KEYS, "protect.<param>", "evaluate.<field>", DEFENSE_KEY]
            hint = did_you_mean(k, ["seed", *DATA_KEYS, DEFENSE_KEY, *(f"evaluate.{f}" for f in recipe_fields)])
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
    return Study(str(raw.get("name") or p.stem), out_dir, datasets, methods, grid, fixed,
                 _surrogate_spec(p, raw.get("surrogate"), fixed))


def _surrogate_spec(p: Path, raw: Any, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The ``surrogate`` section with defaults filled in ({} when absent); mistakes are one-line UserErrors."""
    from ..models import MODELS

    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{p}: 'surrogate' must be a mapping with keys {', '.join(SURROGATE_KEYS)}")
    for k in raw:
        if k not in SURROGATE_KEYS:
            raise UserError(f"{p}: unknown key 'surrogate.{k}'{did_you_mean(str(k), SURROGATE_KEYS)}; "
                            f"allowed: {', '.join(SURROGATE_KEYS)}")
    spec = SURROGATE_KEYS | raw
    if spec["model"] not in MODELS:
        raise UserError(f"{p}: surrogate.model '{spec['model']}' is not a model{did_you_mean(spec['model'], MODELS)}")
    for k in ("epochs", "batch_size"):
        if not isinstance(spec[k], int) or spec[k] < 1:
            raise UserError(f"{p}: surrogate.{k} must be a positive integer, got {spec[k]!r}")
    if not isinstance(spec["images"], int) or spec["images"] < 0:
        raise UserError(f"{p}: surrogate.images must be 0 (all the rest) or a positive integer, got {spec['images']!r}")
    if "data.train_limit" not in fixed:
        raise UserError(f"{p}: 'surrogate' trains on the training images the cells leave out: set fixed "
                        "data.train_limit below the training split's size")
    return spec


def _defense_list(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else ([] if v in (None, "") else [str(v)])


def protect_config(study: Study, cell: Mapping[str, Any], surrogate: str | None = None) -> dict[str, Any]:
    """What determines the protected data of a cell (cells sharing it share the cached output).

    ``surrogate``: the study-trained surrogate's weights file, given to methods that take ``surrogate_weights``
    unless the study names its own file."""
    from ..protect.base import METHODS

    params = dict(study.methods[cell["method"]]) | {k.split(".", 1)[1]: v for k, v in cell.items()
                                                     if k.startswith("protect.")}
    fields = {f.name for f in dataclasses.fields(METHODS.get(cell["method"]).Params)}
    if surrogate and "surrogate_weights" in fields and not params.get("surrogate_weights"):
        params |= {"surrogate_weights": surrogate, "surrogate": study.surrogate["model"]}
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
    tag = _tag([src, tl, el, cell.get("data.size")])
    folder = cache / f"data-{cell['dataset']}-{tag}"
    if D.is_main() and not folder.is_dir():
        from ..utils import atomic_dir

        ds = load(src, size=cell.get("data.size"))
        idx = torch.cat([_limited(ds, s, tl if s == "train" else el, 0) for s in ds.split_names()])
        sub = ds.subset(idx)
        # a new archive of the subset: not laid out row by row like the source, so no source to copy keys from
        meta = {k: v for k, v in sub.meta.items() if k != "source"} | {"format": "npz", "name": cell["dataset"]}
        sub = dataclasses.replace(sub, meta=meta)
        with atomic_dir(folder) as tmp:
            save(sub, tmp)
    D.barrier()
    return str(next(folder.glob("*.npz")))


def _tag(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def study_surrogate(study: Study, cell: Mapping[str, Any], cache: Path, device: str) -> str | None:
    """The weights file of the cell's dataset's study surrogate, trained (once, all ranks) on the training images
    that ``data.train_limit`` leaves out, with labels; None when the study has no ``surrogate`` section."""
    if not study.surrogate:
        return None
    from ..data import load
    from ..train.loop import Recipe, train_classifier

    src, tl, size = study.datasets[cell["dataset"]], cell.get("data.train_limit"), cell.get("data.size")
    path = cache / f"surrogate-{cell['dataset']}-{_tag([src, tl, size, study.surrogate])}.pt"
    if not path.is_file():
        ds = load(src, size=size)
        train, used = ds.indices("train"), _limited(ds, "train", tl, 0)
        rest = train[~torch.isin(train, used)]
        if study.surrogate["images"]:
            rest = rest[:study.surrogate["images"]]
        if len(rest) < ds.num_classes:
            raise UserError(f"surrogate: dataset '{cell['dataset']}' has {len(rest)} training images outside "
                            f"data.train_limit={tl}; lower data.train_limit so the surrogate has images to learn from")
        sub = ds.subset(rest)
        spec = study.surrogate
        recipe = Recipe(model=spec["model"], epochs=spec["epochs"], batch_size=spec["batch_size"], lr=float(spec["lr"]))
        log(f"study surrogate for '{cell['dataset']}': {spec['model']} on {len(rest)} training images the cells "
            "do not use")
        model, _ = train_classifier(sub.images, sub.labels, sub.num_classes, recipe, device)
        if D.is_main():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # array tasks may race to write it
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
            # which images it learnt from, so anyone can check it never saw a protected one
            write_json(path.with_suffix(".json"), {"dataset": cell["dataset"], "source": src, "spec": spec,
                                                   "train_rows": rest.tolist(), "cells_train_rows": used.tolist()})
            os.replace(tmp, path)
        D.barrier()
    return str(path.resolve())  # UC opens it from wherever the cell runs


def clean_baseline(cache: Path, src: str, recipe: Any, extra: Any) -> tuple[Path, dict[str, Any] | None]:
    """Where the clean victim of (data, recipe and seed, ``extra``, world size) is cached, and its result if there."""
    path = cache / f"clean-{_tag([src, extra, dataclasses.asdict(recipe), D.world_size()])}.json"
    D.barrier()  # every rank decides on the same files: all of them train the victim, or none does
    return path, (json.loads(path.read_text()) if path.is_file() else None)


def run_cell(study: Study, cell: Mapping[str, Any], cell_dir: Path, device: str) -> dict[str, Any]:
    """Protect (or reuse the cached protection), then audit with a victim; returns the results dict."""
    from ..data import load
    from ..protect.base import METHODS, make_params
    from ..protect.keys import Key, save_key
    from ..protect.run import MANIFEST, load_output, protect_source
    from ..train.defenses import parse_defenses
    from ..train.loop import Recipe
    from .evaluate import evaluate

    cache = study.out / "cache"
    src = source_subset(study, cell, cache)
    pc = protect_config(study, cell, study_surrogate(study, cell, cache, device)) | {"source": src}
    # the cache is keyed by every parameter the method will use, defaults included: a changed default (a new
    # release) never reuses an output made under the old one
    tag = _tag(pc | {"resolved": dataclasses.asdict(make_params(METHODS.get(cell["method"]),
                                                                {k: str(v) for k, v in pc["params"].items()}))})
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
    rk = {k.split(".", 1)[1]: v for k, v in cell.items() if k.startswith("evaluate.") and k != DEFENSE_KEY}
    recipe = Recipe(**({"seed": int(cell["seed"])} | rk))
    recipe.validate()
    defenses = parse_defenses(_defense_list(cell.get(DEFENSE_KEY)))
    cpath, cached = clean_baseline(cache, src, recipe, [cell.get("data.size"), [d.spec for d in defenses]])
    res = evaluate(prot, clean, recipe, device, work_dir=cell_dir, clean_result=cached, defenses=defenses)
    res["clean_cached"] = cached is not None
    if cached is None and D.is_main():
        write_json(cpath, {"acc": res["clean_acc"], "curve": res["curves"]["clean"], "wall_s": res["wall_s"]["clean"]})
    res["protect"] = {"cache": pdir.name, "params": manifest["params"], "time_s": manifest["time_s"],
                      "fit_setup": (manifest.get("fit") or {}).get("generator", {}).get("setup")}
    for f in ("protected.ckpt", "clean.ckpt"):
        if D.is_main():
            (cell_dir / f).unlink(missing_ok=True)
    return res


SOURCES = "sources.json"  # in the sweep folder: each dataset's digest when the sweep started


def check_sources(study: Study) -> None:
    """Refuse to continue a sweep whose data changed since it started: its finished cells, cached subsets,
    protections and clean victims were made from the old files, and a table that mixed them with new ones would
    compare cells that saw different data. The first run records each dataset's :func:`~unlearnable.data.io.
    source_digest` (its bytes) and :func:`~unlearnable.data.io.source_stat` (its files' sizes and times) in
    ``OUT/sources.json``; every later run (each array task too) compares before any work. Files whose sizes and
    times are those recorded are not read again (an array of a hundred tasks on a 10 GB folder would otherwise read
    a terabyte); a copy with new times (data staged to a node's local disk) is read and compared by its bytes."""
    from ..data.io import source_digest, source_stat

    path = study.out / SOURCES
    before = {name: rec if isinstance(rec, dict) else {"digest": rec}  # a record from before the stats: digest only
              for name, rec in (json.loads(path.read_text()) if path.is_file() else {}).items()}

    def current(name: str, src: str) -> dict[str, str | None]:
        stat = source_stat(src)
        old = before.get(name, {})
        if stat is not None and old.get("stat") == stat:
            return {"digest": old["digest"], "stat": stat}  # untouched since recorded: not read again
        return {"digest": source_digest(src), "stat": stat}

    # rank 0 reads the files, every rank gets its digests: a torchrun job reads its data once, not once per rank
    now = D.broadcast_object({name: current(name, src) for name, src in study.datasets.items()} if D.is_main()
                             else None)
    changed = [name for name in now if name in before and before[name]["digest"] != now[name]["digest"]]
    if changed:
        name = changed[0]
        raise UserError(f"{study.datasets[name]}: dataset '{name}' changed since the sweep in {study.out} started "
                        f"(its files differ from those the finished cells and caches were made from); run the "
                        f"sweep with a new --out, or remove {study.out} to start it over")
    D.barrier()  # every rank has compared with the same file before rank 0 adds to it
    if D.is_main() and any(name not in before for name in now):
        # the first run's record stands for the names it has: array tasks never rewrite it at once
        write_json(path, {name: before.get(name) or now[name] for name in {**before, **now}})


def run_study(study: Study, device: str, only: int | None = None) -> list[dict[str, Any]]:
    """Run the unfinished cells (all, or only index ``only``) after :func:`check_sources`; rank 0 writes each
    ``results.json``."""
    cells = study.cells()
    if only is not None:
        if not 0 <= only < len(cells):
            raise UserError(f"--cell {only}: the study has {len(cells)} cells (0..{len(cells) - 1})")
        cells = [cells[only]]
    check_sources(study)
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


def _fit_field(study: Study, result: Mapping[str, Any], name: str) -> Any:
    """A field of the protection's ``manifest.json → fit`` for a finished cell (None when absent)."""
    cache = (result.get("protect") or {}).get("cache")
    try:
        manifest = json.loads((study.out / "cache" / cache / "manifest.json").read_text()) if cache else {}
    except (OSError, ValueError):
        return None
    return (manifest.get("fit") or {}).get(name)


def merge(study: Study) -> Path:
    """Write ``sweep.csv`` (one row per finished cell) and return its path; the report draws the figure from it."""
    keys = study.varied()
    rows = []
    for _, cell, done in status(study):
        if done:
            r = load_cell(study.out / "cells" / cell_name(cell, keys))
            bs = cell.get("protect.batch_size", cell.get("evaluate.batch_size"))
            valid, _ = baseline_valid(r["clean_acc"], r["chance_acc"])
            purity = _fit_field(study, r, "cluster_purity")
            rows.append({"dataset": cell["dataset"], "method": cell["method"], "batch_size": bs,
                         "seed": cell["seed"], "clean_acc": r["clean_acc"], "protected_acc": r["protected_acc"],
                         # the best epoch on the clean test split ("" in cells written before it was recorded)
                         "protected_best_acc": r.get("protected_best_acc", ""),
                         "chance_acc": r["chance_acc"],
                         # mean per-class recall, for imbalanced test splits ("" in cells written before it)
                         "protected_balanced_acc": r.get("protected_balanced_acc", ""),
                         "valid": "yes" if valid else "no",
                         # per-rank or global batch statistics matter to a batch-size study (issue 14)
                         "sync_bn": r.get("setup", {}).get("sync_bn", "off"),
                         "precision": r.get("recipe", {}).get("precision", "fp32"),
                         # the lr rule that goes with the batch size the figure plots: the perturbation learner's
                         # when the protect batch is studied, else the victim's
                         "lr_scaling": ((r.get("protect", {}).get("params") or {}) if "protect.batch_size" in cell
                                        else r.get("recipe", {})).get("lr_scaling", ""),
                         # UC: how well the key's clusters follow the labels (what the seed changes most)
                         "cluster_purity": "" if purity is None else purity}
                        | {k: cell[k] for k in keys if k not in ("dataset", "method", "seed")})
    cols = CSV_FIRST + [k for k in keys if k not in CSV_FIRST]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return write_text(study.out / "sweep.csv", buf.getvalue())
