"""``unlearnable audit``: the methods x defences x mix matrix, resumable, and its bad inputs."""

from __future__ import annotations

import csv

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
    assert list(rows[0]) == ["method", "defense", "mix", "clean_acc", "protected_acc", "valid"]
    assert len(rows) == 3 + 2 * 3 * 2  # one clean baseline per defence + every (method, defence, mix)
    assert {(r["method"], r["defense"], r["mix"]) for r in rows if r["method"] != "clean"} == {
        (m, d, x) for m in ("lsp", "ops") for d in ("none", "grayscale", "jpeg:20") for x in ("1.0", "0.5")}
    base = {r["defense"]: r["clean_acc"] for r in rows if r["method"] == "clean"}
    assert all(r["clean_acc"] == base[r["defense"]] for r in rows)  # one baseline per defence, reused
    md = (out / "audit.md").read_text()
    assert "clean (no protection)" in md and "ops (mix 0.5)" in md and "| jpeg:20 |" in md
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()  # the per-cell table of the report, and its heat map embedded
    assert report.count("| lsp | jpeg:20 |") == 2 and "![heatmap.png](heatmap.png)" in report
    assert "data:image/png;base64," in (out / "report.html").read_text() and (out / "config.yaml").is_file()
    assert len(list((out / "protected").glob("*.pt"))) == 2  # each method protected once
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/results.json")}
    assert len(stamps) == 15
    capsys.readouterr()
    audit_inconclusive(cmd)  # resume: every cell is done, nothing is retrained
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/results.json")} == stamps
    assert "clean (no protection)" in capsys.readouterr().out
    audit_inconclusive(["audit", source, "--methods", "lsp", "--defenses", "none", "--mix", "1.0", "--param",
                        "lsp.eps=16/255", "--out", str(out), *ARGS])  # other parameters: new cells, not stale ones
    assert len(list(out.glob("cells/*/results.json"))) == 16


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
