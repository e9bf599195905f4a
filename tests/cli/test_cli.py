"""The CLI through its real entry point: good input, and each kind of bad input -> one line, exit 2, no output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import listing, make_images, run_cli, write_folder
from unlearnable.data import load


def test_protect_npz_writes_data_manifest_and_private_key(npz_path, tmp_path, capsys):
    out = tmp_path / "prot"
    code, _, err = run_cli(["protect", str(npz_path), "--method", "cuda", "--out", str(out), "-p", "blur=0.4"],
                           capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "manifest.json", "perturbation.sealed",
                                                     "report.html", "report.md", "tinymnist.npz"]
    key = tmp_path / "prot.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    man = json.loads((out / "manifest.json").read_text())
    secret = key.read_text().strip()
    assert secret not in (out / "manifest.json").read_text()
    assert man["method"] == "cuda" and man["params"]["blur"] == 0.4 and len(man["key_fingerprint"]) == 16
    assert man["splits_protected"] == ["train"]
    assert set(man["metrics"]) == {"train", "val", "test"}
    assert man["metrics"]["test"]["linf_max"] == 0 and man["metrics"]["train"]["linf_max"] > 0
    assert man["counts"] == {"train": 24, "val": 8, "test": 12}
    with np.load(npz_path) as a, np.load(out / "tinymnist.npz") as b:
        assert list(a.files) == list(b.files)
        assert np.array_equal(a["test_images"], b["test_images"])
        assert not np.array_equal(a["train_images"], b["train_images"])
    # same key again => identical bytes; the key file is reused, not replaced
    out2 = tmp_path / "prot2"
    code, _, _ = run_cli(["protect", str(npz_path), "-m", "cuda", "-o", str(out2), "--key", str(key),
                          "-p", "blur=0.4"], capsys)
    assert code == 0
    with np.load(out / "tinymnist.npz") as a, np.load(out2 / "tinymnist.npz") as b:
        assert np.array_equal(a["train_images"], b["train_images"])


def test_protect_all_splits_and_eps(npz_path, tmp_path, capsys):
    out = tmp_path / "p"
    code, _, err = run_cli(["protect", str(npz_path), "-m", "random", "-o", str(out), "--splits", "all",
                            "--eps", "4/255"], capsys)
    assert code == 0, err
    man = json.loads((out / "manifest.json").read_text())
    assert man["linf_budget"] == pytest.approx(4 / 255)
    assert all(0 < m["linf_max"] <= 4 / 255 + 1e-9 for m in man["metrics"].values())


def test_protect_folder_mirrors_the_tree(folder_path, tmp_path, capsys):
    out = tmp_path / "pf"
    code, _, err = run_cli(["protect", str(folder_path), "-m", "cuda", "-o", str(out)], capsys)
    assert code == 0, err
    written = {"manifest.json", "perturbation.sealed", "config.yaml", "report.md", "report.html"}
    assert listing(out) - written == listing(folder_path)
    assert load(out).ids == load(folder_path).ids


def _npz(tmp_path: Path, name: str, **arrays) -> Path:
    p = tmp_path / name
    np.savez(p, **arrays)
    return p


def bad_inputs(tmp_path: Path) -> list[tuple[str, list[str], str]]:
    x, y = make_images(8, 1, 8, 2)
    lab = y.astype(np.int64)[:, None]
    mism = _npz(tmp_path, "mismatch.npz", train_images=x, train_labels=lab[:5], test_images=x, test_labels=lab)
    neg = lab.copy()
    neg[0] = -1
    negative = _npz(tmp_path, "negative.npz", train_images=x, train_labels=neg, test_images=x, test_labels=lab)
    gap = lab.copy()
    gap[gap == 1] = 3  # classes 1 and 2 have no images
    empty = _npz(tmp_path, "emptycls.npz", train_images=x, train_labels=gap, test_images=x, test_labels=gap)
    corrupt = write_folder(tmp_path / "corrupt")
    (corrupt / "train" / "cat" / "zz.png").write_text("this is not an image")
    exists = tmp_path / "exists"
    exists.mkdir()
    (exists / "keep.txt").write_text("precious")
    loose = tmp_path / "loose.key"
    loose.write_text("ab" * 32)
    os.chmod(loose, 0o644)
    good = _npz(tmp_path, "good.npz", train_images=x, train_labels=lab, test_images=x, test_labels=lab)
    (tmp_path / "data.txt").write_text("x")
    return [
        ("missing file", ["protect", str(tmp_path / "nope.npz"), "-m", "cuda"], "nope.npz: no such file"),
        ("unknown format", ["protect", str(tmp_path / "data.txt"), "-m", "cuda"], "data.txt: unknown format"),
        ("unknown method", ["protect", str(good), "-m", "cudaa"], "unknown method 'cudaa' (did you mean 'cuda'?)"),
        ("count mismatch", ["protect", str(mism), "-m", "cuda"], "'train_labels' has 5 labels for 8 images"),
        ("label out of range", ["protect", str(negative), "-m", "cuda"], "negative label -1"),
        ("empty class", ["protect", str(empty), "-m", "cuda"], "class '1' has no train images"),
        ("corrupt image", ["protect", str(corrupt), "-m", "cuda"], "zz.png: not a readable image"),
        ("output exists", ["protect", str(good), "-m", "cuda", "--out", str(exists)], "already exists"),
        ("loose key", ["protect", str(good), "-m", "cuda", "--key", str(loose)], "permissions 0o644 are too open"),
        ("bad param", ["protect", str(good), "-m", "cuda", "-p", "kernel=two"], "'two' is not a number"),
        ("param syntax", ["protect", str(good), "-m", "cuda", "-p", "blur"], "expected NAME=VALUE"),
        ("bad split", ["protect", str(good), "-m", "cuda", "--splits", "val"], "split 'val' not in the data"),
        ("unknown option", ["protect", str(good), "-m", "cuda", "--blur", "3"], "No such option"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    name, args, message = bad_inputs(tmp_path)[case]
    if "--out" not in args:
        args = args + ["--out", str(tmp_path / "out")]
    before = listing(tmp_path)
    code, out, err = run_cli(args, capsys)
    assert code == 2, (name, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
    assert message in lines[0], (name, lines[0])
    assert "Traceback" not in err + out
    assert listing(tmp_path) == before, name  # nothing written, not even a key


def test_real_entry_point_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "unlearnable", "protect", str(tmp_path / "nope.npz"), "-m", "cuda",
                        "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "nope.npz: no such file" in r.stderr


def test_datasets_lists_everything(capsys):
    """Every registered name (and built-in dataset) has its own row: a new one needs no edit here."""
    from unlearnable.data.formats import FORMATS
    from unlearnable.data.formats.builtin import BUILTINS
    from unlearnable.forget import STRATEGIES
    from unlearnable.models import MODELS
    from unlearnable.models.seg3d import SEG_MODELS
    from unlearnable.protect import METHODS
    from unlearnable.protect3d.base import VOLUME_METHODS
    from unlearnable.train.defenses import DEFENSES

    code, out, _ = run_cli(["datasets"], capsys)
    assert code == 0
    rows = {line.split()[0] for line in out.splitlines() if line and not line[0].isspace()}
    for reg in (FORMATS, MODELS, SEG_MODELS, METHODS, VOLUME_METHODS, DEFENSES, STRATEGIES):
        assert set(reg.names()) <= rows, (reg.what, set(reg.names()) - rows)
    assert set(BUILTINS) <= rows


def test_interrupted_protect_leaves_nothing_behind(npz_path, tmp_path, capsys, monkeypatch):
    from unlearnable.protect import run

    real = run.stream_protect

    def boom(cat, out_dir, *a, **k):  # interrupted half-way through the streamed write
        real(cat, out_dir, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "stream_protect", boom)
    before = listing(tmp_path)
    code, _, err = run_cli(["protect", str(npz_path), "-m", "cuda", "-o", str(tmp_path / "o")], capsys)
    assert code == 130 and "interrupted" in err
    assert listing(tmp_path) == before


def test_force_replaces_an_existing_output(npz_path, tmp_path, capsys):
    out = tmp_path / "o"
    assert run_cli(["protect", str(npz_path), "-m", "cuda", "-o", str(out)], capsys)[0] == 0
    first = (out / "manifest.json").read_text()
    assert run_cli(["protect", str(npz_path), "-m", "random", "-o", str(out), "--force"], capsys)[0] == 0
    assert json.loads((out / "manifest.json").read_text())["method"] == "random" != json.loads(first)["method"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
