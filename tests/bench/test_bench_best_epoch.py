"""bench/best_epoch.py: final epoch against best epoch, read from sweep rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import best_epoch as B  # noqa: E402


def _rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_groups_count_runs_within_the_goal_at_the_final_and_the_best_epoch(tmp_path):
    run = {"data": "d", "victim": "v", "spec": "tiles", "chance": 0.25}
    a = _rows(tmp_path / "a.jsonl", [run | {"test": 0.25, "best_test": 0.5}, run | {"test": 0.3, "best_test": 0.3},
                                     {"job": ["d"], "error": "boom"}])
    b = _rows(tmp_path / "b.jsonl", [run | {"test": 0.45, "best_test": 0.6},
                                     run | {"spec": "clean", "test": 0.8, "best_test": 0.8},
                                     {k: v for k, v in run.items() if k != "chance"} | {"test": 0.2, "best_test": 0.2}])
    (g,) = B.groups([a, b], min_runs=3)  # the clean group has one run: left out
    assert (g["spec"], g["runs"], g["chance"]) == ("tiles", 4, 0.25)
    assert g["final_mean"] == 0.3 and g["best_mean"] == 0.4
    assert (g["final_within_goal"], g["best_within_goal"]) == (3, 2)  # 0.25, 0.3, 0.2 / 0.3, 0.2 at <= 35%
    assert "| d | v | `tiles` | 4 | 30.0 | 40.0 | 3 / 2 |" in B.table([g])
    assert B.groups([a, b], min_runs=5) == []


def test_figure_draws_the_chosen_groups_and_refuses_when_none_has_runs(tmp_path):
    import pytest

    run = {"data": "d", "victim": "v", "spec": "tiles", "chance": 0.1}
    path = _rows(tmp_path / "a.jsonl", [run | {"test": 0.1 + i / 10, "best_test": 0.5 + i / 10} for i in range(3)])
    B.figure([path], str(tmp_path / "f.png"), which=(("d", "v", "tiles"), ("d", "v", "other")))
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit, match="none of the figure's groups"):
        B.figure([path], str(tmp_path / "g.png"))  # the default groups: none in these rows
    assert not (tmp_path / "g.png").exists()
