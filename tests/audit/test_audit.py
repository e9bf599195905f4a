"""``unlearnable audit``: the methods x defences x mix matrix, resumable, and its bad inputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from _efficacy import single_thread  # noqa: F401
from unlearnable.cli import main


@pytest.fixture()
def source(tmp_path) -> str:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 200, (60, 16, 16), generator=g, dtype=torch.uint8).numpy()
    lab = (np.arange(60) % 3).astype(np.int64)
    path = tmp_path / "tiny.npz"
    np.savez(path, train_images=img[:45], train_labels=lab[:45], test_images=img[45:], test_labels=lab[45:])
    return str(path)


ARGS = ["--model", "smallcnn", "--epochs", "1", "--batch-size", "16", "--lr", "0.05"]


def audit_inconclusive(cmd: list[str]) -> None:
    """Run an audit on the random-label ``source``: no clean victim can learn it, so every run exits 3."""
    with pytest.raises(SystemExit) as e:
        main(cmd)
    assert e.value.code == 3


def test_audit_writes_the_matrix_and_resumes(source, tmp_path, capsys):
    out = tmp_path / "audit"
    cmd = ["audit", source, "--methods", "lsp,ops", "--defenses", "none,grayscale,jpeg:20", "--mix", "1.0,0.5",
           "--out", str(out), *ARGS]
    audit_inconclusive(cmd)
    rows = list(csv.DictReader((out / "audit.csv").open()))
    assert list(rows[0]) == ["method", "defense", "mix", "clean_acc", "protected_acc", "protected_best_acc",
                             "protected_balanced_acc", "valid"]
    assert all(float(r["protected_best_acc"]) >= float(r["protected_acc"]) for r in rows)  # best epoch >= final
    assert all(0 <= float(r["protected_balanced_acc"]) <= 1 for r in rows)  # every row: baselines and floors too
    # one clean baseline per defence, one clean-rows floor per defence for the partial mix, every (method, defence,
    # mix)
    assert len(rows) == 3 + 3 + 2 * 3 * 2
    assert {(r["method"], r["defense"], r["mix"]) for r in rows if r["method"] not in ("clean", "clean rows only")} == {
        (m, d, x) for m in ("lsp", "ops") for d in ("none", "grayscale", "jpeg:20") for x in ("1.0", "0.5")}
    assert {(r["defense"], r["mix"]) for r in rows if r["method"] == "clean rows only"} == {
        (d, "0.5") for d in ("none", "grayscale", "jpeg:20")}
    base = {r["defense"]: r["clean_acc"] for r in rows if r["method"] == "clean"}
    assert all(r["clean_acc"] == base[r["defense"]] for r in rows)  # one baseline per defence, reused
    md = (out / "audit.md").read_text()
    assert "clean (no protection)" in md and "ops (mix 0.5)" in md and "| jpeg:20 |" in md
    assert "clean rows only (mix 0.5)" in md
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()  # the per-cell table of the report, and its heat map embedded
    assert report.count("| lsp | jpeg:20 |") == 2 and "![heatmap.png](heatmap.png)" in report
    assert "data:image/png;base64," in (out / "report.html").read_text() and (out / "config.yaml").is_file()
    cues = json.loads((out / "audit.json").read_text())["colour_cues"]  # the data's own colour cues, once
    assert "budget_levels" not in cues and 0 <= cues["acc"] <= 1 and "alone tells" in report
    assert len(list((out / "protected").glob("*.pt"))) == 2  # each method protected once
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/results.json")}
    assert len(stamps) == 18
    capsys.readouterr()
    audit_inconclusive(cmd)  # resume: every cell is done, nothing is retrained
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/results.json")} == stamps
    assert "clean (no protection)" in capsys.readouterr().out
    audit_inconclusive(["audit", source, "--methods", "lsp", "--defenses", "none", "--mix", "1.0", "--param",
                        "lsp.eps=16/255", "--out", str(out), *ARGS])  # other parameters: new cells, not stale ones
    assert len(list(out.glob("cells/*/results.json"))) == 19


@pytest.mark.parametrize("extra,msg", [
    (["--methods", "lsp,emm"], "did you mean 'em'"),
    (["--defenses", "none,jpg"], "did you mean 'jpeg'"),
    (["--defenses", "jpeg:abc"], "not a number"),
    (["--mix", "1.0,1.5"], "--mix"),
    (["--mix", "-0.1"], "--mix"),
    (["--param", "lsp.patchh=3"], "did you mean 'patch'"),
    (["--param", "em.steps=3"], "not in --methods"),
])
def test_bad_input_is_one_line_and_writes_nothing(source, tmp_path, capsys, extra, msg):
    out = tmp_path / "audit"
    args = ["audit", source, "--methods", "lsp", "--out", str(out), *ARGS]
    for i in range(0, len(extra), 2):  # later options override the defaults above
        if extra[i] in args:
            args[args.index(extra[i]) + 1] = extra[i + 1]
        else:
            args += extra[i:i + 2]
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and msg in err, err
    assert not out.exists()


def test_every_registered_defence_runs_in_the_audit_matrix(source, tmp_path, capsys):
    from unlearnable.train.defenses import DEFENSES

    names = DEFENSES.names()
    out = tmp_path / "all"
    audit_inconclusive(["audit", source, "--methods", "ops", "--defenses", ",".join(names), "--mix", "1.0",
                        "--out", str(out), *ARGS])
    rows = list(csv.DictReader((out / "audit.csv").open()))
    assert {r["defense"] for r in rows} == set(names)
    assert {r["method"] for r in rows} == {"clean", "ops"}
    assert all(0.0 <= float(r["protected_acc"]) <= 1.0 for r in rows)


def test_clean_rows_floor_trains_on_exactly_the_rows_mix_leaves_clean(source, tmp_path, monkeypatch):
    """The floor row of ``--mix R``: the victim sees only the training rows that R leaves clean (the complement of
    the protected rows), for as many SGD steps as the other victims (epochs scaled by N / rows)."""
    import json

    from unlearnable.audit import evaluate as E
    from unlearnable.audit import matrix
    from unlearnable.audit.evaluate import mix_indices

    seen: list[tuple[tuple[str, ...], int]] = []
    real = matrix.train_and_test

    def spy(train, test, recipe, *a, **kw):
        desc = kw.get("desc", a[4] if len(a) > 4 else None)
        if desc == "clean-rows victim":
            seen.append((train.ids, recipe.epochs))
        if desc == "clean victim":
            seen.append((train.ids, 0))
        return real(train, test, recipe, *a, **kw)

    monkeypatch.setattr(matrix, "train_and_test", spy)  # the clean baseline
    monkeypatch.setattr(E, "train_and_test", spy)  # the floor (evaluate.clean_rows_floor)
    out = tmp_path / "audit"
    audit_inconclusive(["audit", source, "--methods", "lsp", "--defenses", "none", "--mix", "0.25,1.0",
                        "--out", str(out), "--seed", "0", *ARGS[:2], "--epochs", "2", *ARGS[4:]])
    kept = 45 - round(0.25 * 45)
    (all_ids, _), (floor_ids, epochs) = seen
    protected = {all_ids[i] for i in mix_indices(45, 0.25, 0).tolist()}
    assert set(floor_ids) == set(all_ids) - protected and len(floor_ids) == kept
    assert epochs == round(2 * 45 / kept) == 3
    (floor,) = [json.loads(p.read_text()) for p in out.glob("cells/method=clean_rows_only*/results.json")]
    assert floor["rows"] == kept and floor["epochs"] == 3


def test_the_protected_cache_is_tied_to_labels_and_training_rows(grey_set, tmp_path, monkeypatch):
    """An audit resumed on relabelled data or on other training rows protects afresh instead of reusing images
    protected with the old labels (the gradient methods read them)."""
    from dataclasses import replace

    import unlearnable.audit.matrix as M

    real, calls = M.protect, []
    monkeypatch.setattr(M, "protect", lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = replace(grey_set, splits=tuple("train" if i < 12 else "test" for i in range(len(grey_set))))
    first = M._protect_cached(ds, "random", {}, 3, tmp_path, "cpu")
    again = M._protect_cached(ds, "random", {}, 3, tmp_path, "cpu")
    assert len(calls) == 1 and torch.equal(first.images, again.images)  # same inputs: read back
    relabelled = replace(ds, labels=(ds.labels + 1) % len(ds.classes))
    M._protect_cached(relabelled, "random", {}, 3, tmp_path, "cpu")
    moved = replace(ds, splits=tuple("train" if i < 10 else "test" for i in range(len(ds))))
    M._protect_cached(moved, "random", {}, 3, tmp_path, "cpu")
    assert len(calls) == 3 and len(list(tmp_path.glob("random-*.pt"))) == 3
