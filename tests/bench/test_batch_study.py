"""bench/batch_study.py: the U-shape reading of a batch-size study, on hand-made sweep rows."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "batch_study.py"
spec = importlib.util.spec_from_file_location("bench_batch_study", BENCH)
batch_study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(batch_study)


def rows(dataset: str, acc: dict[int, list[float]]) -> list[dict[str, str]]:
    return [{"dataset": dataset, "method": "uc", "batch_size": str(b), "seed": str(s), "clean_acc": "0.9",
             "protected_acc": str(a), "valid": "yes"} for b, accs in acc.items() for s, a in enumerate(accs)]


def test_u_shape_needs_an_interior_minimum_below_both_ends_for_every_seed() -> None:
    got = batch_study.reading(
        rows("u", {16: [0.6, 0.7, 0.65], 64: [0.3, 0.4, 0.35], 512: [0.7, 0.6, 0.8]})
        + rows("monotone", {16: [0.3, 0.35, 0.3], 64: [0.5, 0.45, 0.5], 512: [0.7, 0.7, 0.75]})
        + rows("noisy", {16: [0.6, 0.3, 0.65], 64: [0.4, 0.4, 0.4], 512: [0.7, 0.6, 0.8]}))
    assert got["u/uc"]["u_shape"] and got["u/uc"]["best_batch"] == 64
    assert got["u/uc"]["best_vs_smallest_per_seed"] == [30.0, 30.0, 30.0] and got["u/uc"]["drop_at_best"] == 55.0
    assert not got["monotone/uc"]["u_shape"] and got["monotone/uc"]["best_batch"] == 16
    assert "at an end" in got["monotone/uc"]["verdict"]
    # the mean is lowest at 64 but seed 1 is better at 16: not claimed
    assert got["noisy/uc"]["best_batch"] == 64 and not got["noisy/uc"]["u_shape"]
    assert got["noisy/uc"]["best_vs_smallest_per_seed"][1] < 0
