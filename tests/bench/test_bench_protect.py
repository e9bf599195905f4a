"""bench/protect.py runs end to end on tiny file sets: best-over-best ratios and the interleaved pairs' ratios."""

from __future__ import annotations

import pytest

from helpers import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("protect")


@pytest.mark.parametrize("kind,n", [("npz28", 80), ("png224", 12)])
def test_file_runs_report_ratios_of_interleaved_pairs(bench, kind, n):
    r = bench.bench_files(kind, n, "cpu", repeat=2)
    assert r["pairs"] == 2 and len(r["ratio_pairs"]) == 2
    assert r["images"] == (n + n // 4 if kind == "npz28" else n)
    lo, hi = sorted(r["ratio_pairs"])
    assert lo <= round(r["ratio_pairs_median"], 3) <= hi  # the median of two pairs lies between them
    assert r["ratio_protect_over_plain"] == r["protect_s"] / r["plain_read_write_s"]  # best over best
    assert r["plain_read_write_s"] > 0 and r["protect_s"] > 0 and r["ratio_cpu"] > 0
