"""Resumable grids of runs: one folder and one ``results.json`` per cell; finished cells are skipped.

Both ``sweep`` (any config keys) and ``audit`` (methods x defences x mix) are grids of cells. A cell is a flat
dict of config values; its folder name is readable (``dataset=mnist5k,method=cuda,...``) with a short hash so it
stays unique and filesystem-safe. A cell counts as finished only once its ``results.json`` exists, and that file
is written atomically, so an interrupted grid resumes exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from itertools import product
from pathlib import Path
from typing import Any

from ..runtime import distributed as D
from ..utils import write_json

RESULTS = "results.json"


def expand_grid(axes: Mapping[str, Iterable[Any]], fixed: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Cartesian product of ``axes`` (in the given key order), each cell merged over ``fixed``."""
    keys = list(axes)
    return [dict(fixed or {}) | dict(zip(keys, vals)) for vals in product(*(list(axes[k]) for k in keys))]


def cell_name(cell: Mapping[str, Any], keys: Iterable[str] | None = None) -> str:
    """A readable, unique folder name for ``cell``."""
    shown = list(keys) if keys is not None else sorted(cell)
    text = ",".join(f"{k}={cell[k]}" for k in shown if k in cell)
    safe = re.sub(r"[^A-Za-z0-9=,._+-]", "_", text)[:120]
    digest = hashlib.sha256(json.dumps(cell, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{safe}-{digest}" if safe else digest


def is_done(cell_dir: Path) -> bool:
    return (cell_dir / RESULTS).is_file()


def run_cells(
    cells: list[dict[str, Any]],
    root: Path,
    run: Callable[[dict[str, Any], Path], Mapping[str, Any]],
    name_keys: Iterable[str] | None = None,
    on_skip: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every unfinished cell with ``run(cell, cell_dir)`` and return ``config | results`` rows in cell order.

    ``run`` may leave checkpoints in ``cell_dir``; the returned mapping is stored as ``results.json`` (with the
    cell's config under ``"config"``). Under torchrun every rank runs every cell (the victims train data-parallel);
    rank 0 alone writes, and the others read its file after a barrier, so all ranks return the same rows.
    """
    keys = list(name_keys) if name_keys is not None else None
    rows = []
    for cell in cells:
        d = root / cell_name(cell, keys)
        if is_done(d):
            if on_skip is not None:
                on_skip(cell)
        else:
            d.mkdir(parents=True, exist_ok=True)
            res = dict(run(cell, d))
            if D.is_main():
                write_json(d / RESULTS, {"config": cell} | res)
            D.barrier()
        rows.append(load_cell(d))
    return rows


def load_cell(cell_dir: Path) -> dict[str, Any]:
    data = json.loads((cell_dir / RESULTS).read_text())
    return dict(data.get("config", {})) | {k: v for k, v in data.items() if k != "config"}


def collect(root: Path) -> list[dict[str, Any]]:
    """All finished cells under ``root`` (sorted by folder name)."""
    return [load_cell(d) for d in sorted(p for p in root.iterdir() if is_done(p))] if root.is_dir() else []
