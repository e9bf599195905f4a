"""bench/efficacy.py through its function API on a tiny subset: JSON shape, table, clean baseline above chance."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import load_bench
from unlearnable.errors import UserError


@pytest.fixture(scope="module")
def bench():
    return load_bench("efficacy")


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread on the shared CPU (spinning OpenMP threads slow everything down); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_rows_per_method_and_victim(bench):
    eps = [4 / 255, 8 / 255, 16 / 255]
    assert bench.method_rows("random", eps, "smallcnn") == eps
    assert bench.method_rows("random", eps, "resnet18") == [8 / 255]
    assert bench.method_rows("ops", eps, "smallcnn") == [None]  # no eps parameter: one row at its defaults
    # cuda is unbounded by default (eps=0): the published row plus its budgeted variant
    assert bench.method_rows("cuda", eps, "resnet18") == [None, 8 / 255]


def test_quick_run_json_and_table(bench, tmp_path, capsys):
    out, table = tmp_path / "r.json", tmp_path / "t.md"
    result = bench.main(["--datasets", "textures", "--methods", "random,ops", "--eps", "8/255",
                         "--victims", "smallcnn", "--quick", "--train", "200", "--test", "100", "--epochs", "6",
                         "--out", str(out), "--table", str(table)])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["rows"] == json.loads(json.dumps(result["rows"]))
    rows = result["rows"]
    assert [(r["method"], r["eps_255"]) for r in rows] == [("random", 8.0), ("ops", None)]
    (base,) = result["baselines"]  # one clean victim for the whole (dataset, victim, seed)
    assert base["train"] == 200 and base["test"] == 100 and base["epochs"] == 6 and len(base["test_curve"]) == 6
    assert base["chance"] == pytest.approx(0.1)
    assert base["clean_acc"] > base["chance"] + 0.15  # the victim learns the task
    for r in rows:
        assert r["clean_acc"] == base["clean_acc"] and 0 <= r["protected_acc"] <= 1
        assert r["fit_s"] >= 0 and r["train_s"] > 0 and 0 < r["ssim"] <= 1
        assert sum(map(sum, r["confusion"])) == 100  # the protected victim on the 100 clean test images
        assert r["classes_learnt"] == bench.learnt_classes(r["confusion"], bench.load("textures").classes)
        assert f"| {len(r['classes_learnt'])}/10 |" in table.read_text()
    random8, ops = rows
    assert random8["linf_255"] <= 8 and 30 < random8["psnr_db"] < 50 and ops["linf_255"] > 8  # one pixel, any value
    text = table.read_text().splitlines()
    assert text[0].startswith("| dataset | victim | method | eps | clean % | protected %") and len(text) == 2 + 2 + 2
    assert "| textures | smallcnn | ops | — |" in text[3]
    colour = result["colour_cues"]["textures"]  # the data's own floor for a colour reader, under the table
    assert colour["chance"] == pytest.approx(0.1) and 0.2 < colour["acc"] <= 1 and "rocket" in colour["named"]
    assert text[-1].startswith("Colour alone (a linear classifier")
    assert f"textures {100 * colour['acc']:.1f}%" in text[-1]


def test_learnt_classes_follow_the_verify_rule(bench):
    # a: recognised; b: mostly sent to c; c: takes most of b too, precision 10/19, just above half: still counted
    cm = [[9, 0, 1], [0, 2, 8], [0, 0, 10]]
    assert bench.learnt_classes(cm, ("a", "b", "c")) == ["a", "c"]
    assert bench.learnt_classes([[5, 5, 0], [0, 0, 10], [0, 0, 10]], ("a", "b", "c")) == []
    assert bench._learnt({"classes_learnt": ["a"], "confusion": cm}) == "1/3" and bench._learnt({}) == "—"


def test_jpeg_round_trip_touches_the_training_split_only(bench):
    from unlearnable.data import load

    ds = load("textures:n=20,test=10")
    out = bench._jpeg_train(ds, 50)
    train, test = ds.indices("train"), ds.indices("test")
    assert torch.equal(out.images[test], ds.images[test]) and not torch.equal(out.images[train], ds.images[train])
    assert bench.markdown_table({"rows": [], "config": {"jpeg": None}}).count("\n") == 2


def test_unknown_method_fails_before_training(bench):
    with pytest.raises(UserError, match="did you mean"):
        bench.run(["textures"], ["randon"], [8 / 255], ["smallcnn"], quick=True)


def test_rows_file_resumes_without_training_again(bench, tmp_path, monkeypatch, capsys):
    """--rows appends each finished row; a rerun with the same settings trains nothing that is already there, a cut
    off last line is dropped, other settings are not reused, and --from-rows rebuilds the same table."""
    rows_file, table, table2 = tmp_path / "rows.jsonl", tmp_path / "t.md", tmp_path / "t2.md"
    args = ["--datasets", "textures", "--methods", "random,ops", "--eps", "8/255", "--victims", "smallcnn",
            "--quick", "--train", "100", "--test", "50", "--epochs", "2", "--rows", str(rows_file)]
    first = bench.main(args + ["--table", str(table)])
    kinds = [json.loads(x)["kind"] for x in rows_file.read_text().splitlines()]
    assert kinds == ["baseline", "row", "row"]

    def no_training(*a, **k):
        raise AssertionError("trained a row that the rows file already holds")

    real_evaluate = bench.evaluate
    monkeypatch.setattr(bench, "evaluate", no_training)
    with open(rows_file, "a") as f:
        f.write('{"kind": "row", "sig"')  # a run killed mid-write
    again = bench.main(args)
    assert again["rows"] == first["rows"] and again["baselines"] == first["baselines"]
    assert rows_file.read_text().endswith("}\n")  # the cut-off line is gone before anything is appended

    calls = []  # one more budget: only its row trains, and it reuses the stored clean baseline
    monkeypatch.setattr(bench, "evaluate", lambda *a, **k: calls.append(k["clean_result"]) or real_evaluate(*a, **k))
    more = bench.main([*args[:5], "4/255,8/255", *args[6:]])
    assert [(r["method"], r["eps_255"]) for r in more["rows"]] == [("random", 4.0), ("random", 8.0), ("ops", None)]
    assert len(calls) == 1 and calls[0]["acc"] == first["baselines"][0]["clean_acc"]

    other = bench.RowStore(rows_file, {**json.loads(rows_file.read_text().splitlines()[0])["sig"], "epochs": 3})
    assert other.baseline("textures", "smallcnn") is None and other.row("textures", "smallcnn", "ops", None) is None

    capsys.readouterr()
    figure = tmp_path / "efficacy.png"
    rebuilt = bench.main(["--from-rows", str(rows_file), "--table", str(table2), "--figure", str(figure)])
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size > 5000
    assert [(r["method"], r["eps_255"]) for r in rebuilt["rows"]] == [("random", 8.0), ("ops", None), ("random", 4.0)]
    before, after = table.read_text().splitlines(), table2.read_text().splitlines()
    assert after[:4] == before[:4] and after[-1] == before[-1]  # the rows, and the colour line from the same split


def test_rows_file_bad_line_is_one_message(bench, tmp_path, capsys):
    bad = tmp_path / "rows.jsonl"
    bad.write_text('{"kind": "row"}\n')
    with pytest.raises(SystemExit) as e:
        bench.main(["--from-rows", str(bad)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{bad}: line 1 is not an efficacy row") and "\n" not in err
