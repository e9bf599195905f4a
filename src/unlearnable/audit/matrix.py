"""The robustness audit: methods x defences x mix, one resumable cell each (:mod:`unlearnable.audit.cells`).

For every defence there is one clean baseline cell (a victim trained on clean data through that defence); every
(method, defence, mix) cell trains one victim on data where a fraction ``mix`` of the training split is protected
and reuses that baseline. Each method protects the training split once per source (cached on disk, so a resumed
audit does not protect again). The results files (``audit.csv``, ``audit.json``) are written at the end, each one
atomically; the accuracy table ``audit.md`` and ``heatmap.png`` are drawn from them by the report
(:mod:`unlearnable.report.audit_figures`), which every command renders when it finishes.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..data import ImageSet
from ..log import log
from ..protect.base import protect
from ..runtime import checkpoint as CK
from ..runtime import distributed as D
from ..runtime.precision import Accel
from ..train.defenses import parse_defenses
from ..train.loop import Recipe
from ..utils import write_json, write_text
from .cells import expand_grid, run_cells
from .classes import balanced_accuracy
from .cues import colour_cues
from .evaluate import best_epoch, clean_rows, clean_rows_floor, evaluate, held_out_split, train_and_test
from .validity import baseline_valid, chance_level

# protected_best_acc: the victim's best epoch on the clean test split (protected_acc is the final epoch's, which the
# verdicts use; a trainer who keeps the best epoch on clean held-out data gets the other)
# protected_balanced_acc: mean per-class recall on the clean test split (for imbalanced data; "" in older cells)
CSV_COLUMNS = ("method", "defense", "mix", "clean_acc", "protected_acc", "protected_best_acc", "protected_balanced_acc",
               "valid")
CLEAN = "clean"  # the baseline row's method name
# The floor of a partial release: a victim trained on only the rows that `--mix R` leaves clean. An unlearnable
# example teaches nothing, so no method can take a victim below this row at that mix (docs/methods.md, "Why partial
# protection fails").
FLOOR = "clean rows only"


def subsample(ds: ImageSet, limit: int, seed: int, split: str = "train") -> ImageSet:
    """Keep ``limit`` seeded random samples of ``split`` (all other splits untouched); 0 keeps everything."""
    idx = ds.indices(split)
    if limit <= 0 or limit >= len(idx):
        return ds
    keep = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))[:limit].sort().values]
    others = torch.tensor([i for i, s in enumerate(ds.splits) if s != split], dtype=torch.long)
    return ds.subset(torch.cat([keep, others]))


def run_audit(
    ds: ImageSet,
    methods: Mapping[str, Mapping[str, Any]],
    defenses: Sequence[str],
    mixes: Sequence[float],
    recipe: Recipe,
    out: Path,
    device: str = "cpu",
    key_seed: int = 0,
    source: str = "",
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Run (or resume) the audit matrix under ``out`` and write its results files ``audit.csv`` and ``audit.json``.

    Args:
        methods: method name -> its parameters (as for ``protect``).
        defenses: defence specs (``"none"``, ``"jpeg:10"``, ...); mixes: protected fractions in [0, 1].
        key_seed: the audit protects with the public, reproducible key ``Key.from_seed(key_seed)``.
    Returns:
        One row per cell: the baseline rows (method ``clean``) first, then for every mix strictly between 0 and 1 the
        floor rows (method ``clean rows only``: a victim on the rows that mix leaves clean, alone, trained for as
        many SGD steps as the others), then the method cells.
    """
    out.mkdir(parents=True, exist_ok=True)
    parsed = {d: parse_defenses([d]) for d in defenses}
    fixed = {"source": source, "train_samples": len(ds.indices("train")), "key_seed": key_seed} | {
        f"recipe.{k}": v for k, v in asdict(recipe).items()}
    test = ds.split(held_out_split(ds, source or "the data"))
    clean_train = ds.split("train")
    cache: dict[str, ImageSet] = {}

    def protected(method: str) -> ImageSet:
        if method not in cache:
            cache[method] = _protect_cached(ds, method, dict(methods[method]), key_seed, out / "protected", device,
                                            recipe.accel())
        return cache[method]

    def run_baseline(cell: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
        log(f"audit: clean baseline, defence '{cell['defense']}'")
        acc, hist = train_and_test(clean_train, test, recipe, device, checkpoint=cell_dir / "clean.ckpt",
                                   progress=progress, desc="clean victim", defenses=parsed[cell["defense"]],
                                   clean_train=clean_train)
        return {"clean_acc": acc, "protected_acc": acc, "protected_best_acc": best_epoch(hist.epochs)[0],
                "protected_balanced_acc": balanced_accuracy(hist.test_confusion),
                "curve": hist.epochs, "wall_s": hist.wall_s}

    base_rows = run_cells(expand_grid({"method": [CLEAN], "defense": list(defenses), "mix": [0.0]}, fixed),
                          out / "cells", run_baseline, name_keys=("method", "defense", "mix"))
    baseline = {r["defense"]: r for r in base_rows}

    def run_floor(cell: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
        log(f"audit: floor of mix {cell['mix']}, defence '{cell['defense']}'")
        acc, hist, rows, epochs = clean_rows_floor(clean_train, test, recipe, float(cell["mix"]), recipe.seed, device,
                                                   cell_dir / "floor.ckpt", progress, parsed[cell["defense"]])
        return {"clean_acc": baseline[cell["defense"]]["clean_acc"], "protected_acc": acc,
                "protected_best_acc": best_epoch(hist.epochs)[0],
                "protected_balanced_acc": balanced_accuracy(hist.test_confusion), "curve": hist.epochs,
                "wall_s": hist.wall_s, "epochs": epochs, "rows": rows}

    n = len(clean_train)
    partial = sorted({float(m) for m in mixes if 0.0 < float(m) < 1.0 and len(clean_rows(n, float(m), recipe.seed))})
    floor = run_cells(expand_grid({"method": [FLOOR], "defense": list(defenses), "mix": partial}, fixed),
                      out / "cells", run_floor, name_keys=("method", "defense", "mix")) if partial else []
    base_rows = base_rows + floor

    def run_method(cell: dict[str, Any], cell_dir: Path) -> dict[str, Any]:
        b = baseline[cell["defense"]]
        log(f"audit: method '{cell['method']}', defence '{cell['defense']}', mix {cell['mix']}")
        res = evaluate(protected(cell["method"]), ds, recipe, device, work_dir=cell_dir, progress=progress,
                       clean_result={"acc": b["clean_acc"], "curve": b["curve"], "wall_s": b["wall_s"]},
                       defenses=parsed[cell["defense"]], mix=float(cell["mix"]))
        res["params"] = dict(methods[cell["method"]])
        D.barrier()  # every rank is done with the checkpoints before rank 0 removes them
        for f in cell_dir.glob("*.ckpt") if D.is_main() else ():
            f.unlink()
        return res

    cells = expand_grid({"method": list(methods), "defense": list(defenses), "mix": list(mixes)}, fixed)
    for c in cells:  # other method parameters are other cells (default parameters add no key)
        if methods[c["method"]]:
            c["params"] = json.dumps(dict(methods[c["method"]]), sort_keys=True)
    rows = run_cells(cells, out / "cells", run_method, name_keys=("method", "defense", "mix"))
    rows = mark_validity(base_rows + rows, chance_level(test.labels, ds.num_classes))
    if D.is_main():
        # the classes the images' own colour tells apart, whatever the method (audit/cues.py; no single budget here)
        write_summary(rows, out, defenses, recipe, colour_cues(ds, held_out_split(ds, source or "the data")))
    D.barrier()
    return rows


def mark_validity(rows: Sequence[Mapping[str, Any]], chance: float) -> list[dict[str, Any]]:
    """Add ``valid`` / ``invalid_reason`` to every row from its defence's clean baseline (see baseline_valid)."""
    base = {r["defense"]: r["clean_acc"] for r in rows if r["method"] == CLEAN}
    out = []
    for r in rows:
        ok, why = baseline_valid(base.get(r["defense"], r["clean_acc"]), chance)
        out.append(dict(r) | {"valid": ok, "invalid_reason": why or None})
    return out


def _protect_cached(ds: ImageSet, method: str, params: dict[str, Any], key_seed: int, folder: Path,
                    device: str, accel: Accel | None = None) -> ImageSet:
    """Protect the training split once; the protected images are kept in ``folder`` for resumed audits."""
    reduced = [accel.precision] if accel is not None and accel.precision != "fp32" else []  # other numbers
    # What the protection depends on: the images, the labels the gradient methods read, and which rows are trained.
    tag = CK.fingerprint([method, params, key_seed, *reduced], ds.images, ds.labels, ds.indices("train"))
    path = folder / f"{method}-{tag}.pt"
    cached = CK.load(path)
    if cached is not None:
        return ds.with_images(cached["images"])
    log(f"audit: protecting the training split with '{method}'")
    result = protect(ds, method, key=key_seed, splits="train", device=device, accel=accel, **params)
    if D.is_main():  # every rank took part in the fit (sharded methods need them all); one writes
        CK.save(path, {"images": result.images})
    D.barrier()
    return result


def write_summary(rows: Sequence[Mapping[str, Any]], out: Path, defenses: Sequence[str], recipe: Recipe,
                  colour: Mapping[str, Any] | None = None) -> None:
    """``audit.csv`` (one line per cell) and ``audit.json`` (the same rows with the reason a column is invalid, the
    defence order, the victim and the data's colour cues), each atomically; the report draws the table and the heat
    map from them."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        best, bal = r.get("protected_best_acc"), r.get("protected_balanced_acc")
        w.writerow([r["method"], r["defense"], r["mix"], f"{r['clean_acc']:.4f}", f"{r['protected_acc']:.4f}",
                    "" if best is None else f"{best:.4f}", "" if bal is None else f"{bal:.4f}",
                    "yes" if r.get("valid", True) else "no"])
    write_text(out / "audit.csv", buf.getvalue())
    keep = (*CSV_COLUMNS, "invalid_reason")
    write_json(out / "audit.json", {"model": recipe.model, "epochs": recipe.epochs, "defenses": list(defenses),
                                    "rows": [{k: r.get(k) for k in keep} for r in rows],
                                    **({"colour_cues": dict(colour)} if colour is not None else {})})
