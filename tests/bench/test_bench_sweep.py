"""bench/efficacy_sweep.py: every job of the named grids is a valid protection spec, and the table reads its rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from unlearnable.protect import METHODS

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import efficacy_sweep as S  # noqa: E402


@pytest.mark.parametrize("name", ["gpu1", "gpu2"])
def test_grid_specs_are_valid(name):
    jobs = S.grid(name)
    assert len(set(jobs)) == len(jobs)
    for data, victim, spec, _ in jobs:
        assert data in S.DATASETS and victim in S.VICTIMS
        if spec != "clean":
            method, params = S.parse_spec(spec)
            METHODS.get(method)(**params)  # parses and validates, or raises


def test_table_skips_failed_jobs(tmp_path):
    rows = tmp_path / "rows.jsonl"
    ok = {"data": "textures", "victim": "smallcnn", "spec": "tiles", "seed": 0, "test": 0.444, "best_test": 0.568,
          "train": 1.0, "psnr": 30.2, "fit_s": 0.1}
    rows.write_text(json.dumps(ok) + "\n" + json.dumps({"job": ["x"], "error": "boom"}) + "\n")
    text = S.table(str(rows))
    assert "| textures | smallcnn | `tiles` | 44.4 | 56.8 | 100.0 | 30.2 | 0 |" in text and "boom" not in text
