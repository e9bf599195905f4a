"""bench/colour_cues.py: the colour check per dataset, the class-wise shift search, the count over recorded runs, and
its figure."""

from __future__ import annotations

import json

from helpers import load_bench


def test_colour_cues_bench_on_the_digits(tmp_path):
    bench = load_bench("colour_cues")
    rows = tmp_path / "rows.jsonl"
    eye = [[100 if i == j else 0 for j in range(10)] for i in range(10)]  # a victim that kept every digit
    none = [[100 if j == 0 else 0 for j in range(10)] for _ in range(10)]  # one that sends every image to 0
    rows.write_text("\n".join(json.dumps(r) for r in (
        {"data": "mnist5k", "spec": "tiles", "test": 1.0, "confusion": eye},
        {"data": "mnist5k", "spec": "tiles", "test": 0.1, "confusion": none},
        {"data": "mnist5k", "spec": "clean", "test": 1.0, "confusion": eye},  # clean runs are not counted
        {"data": "textures", "spec": "tiles", "test": 0.5, "confusion": eye})) + "\n")
    out = bench.main(["--datasets", "mnist5k", "--rows", str(rows), "--out", str(tmp_path / "r.json"),
                      "--figure", str(tmp_path / "f.png")])
    d = out["datasets"]["mnist5k"]
    assert 0.2 < d["acc"] < 0.45 and d["chance"] == 0.1 and d["named"] == ["1"]  # the digit 1: fewest bright pixels
    assert d["shifted"]["acc"] <= d["shifted"]["clean_acc"] == d["acc"]  # the search starts from no shift
    runs = d["runs"]
    assert runs["runs"] == 2 and runs["above_goal"] == 1 and runs["learnt_total"] == 10 and runs["learnt_named"] == 1
    assert json.loads((tmp_path / "r.json").read_text())["eps"] == "8/255"
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
