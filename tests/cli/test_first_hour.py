"""A new user's first hour, through the real entry point: outputs never land inside inputs, audits that prove
nothing say so (exit 3), unexpected errors give one line + a saved traceback (exit 1), strict JSON everywhere,
progress lines in logs, no leftover working folders, readable help and a complete catalogue."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import listing, make_images, run_cli

FAST = ["--model", "smallcnn", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


def strict_load(path: Path):
    """json.loads that refuses Infinity / NaN (as strict parsers do)."""
    def refuse(name: str):
        raise ValueError(f"{path}: non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------------------ 1. outputs inside inputs
def test_protect_refuses_output_or_key_inside_the_source(folder_path, tmp_path, capsys):
    before = listing(folder_path)
    for extra in (["--out", str(folder_path / "protected")],
                  ["--out", str(tmp_path / "ok"), "--key", str(folder_path / "train" / "k.key")]):
        code, _, err = run_cli(["protect", str(folder_path), "-m", "cuda", *extra], capsys)
        line = one_line(err)
        assert code == 2 and str(folder_path.resolve()) in line and "inside" in line, err
    assert listing(folder_path) == before
    assert not (tmp_path / "ok").exists() and not (tmp_path / "ok.key").exists()


def test_protect_refuses_a_source_inside_the_output(npz_path, tmp_path, capsys):
    code, _, err = run_cli(["protect", str(npz_path), "-m", "cuda", "--out", str(tmp_path), "--force"], capsys)
    assert code == 2 and "inside --out" in one_line(err)
    assert npz_path.is_file()


def test_every_writing_command_refuses_an_output_inside_its_input(npz_path, folder_path, tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"datasets": {"f": str(folder_path)}, "methods": {"cuda": {}},
                                     "fixed": {"evaluate.epochs": 1}}))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    cases = {
        "evaluate": ["evaluate", "--protected", str(npz_path), "--clean", str(folder_path),
                     "--out", str(folder_path / "audit"), *FAST],
        "audit": ["audit", str(folder_path), "--out", str(folder_path / "a"), *FAST],
        "sweep": ["sweep", str(study), "--out", str(folder_path / "s")],
        "segment train": ["segment", "train", str(folder_path), "--out", str(folder_path / "m")],
        "forget": ["forget", str(model_dir), "brain-phantoms:n=4,size=16", "--forget", "synth-000",
                   "--out", str(model_dir / "f")],
    }
    before = listing(folder_path)
    for name, args in cases.items():
        code, _, err = run_cli(args, capsys)
        assert code == 2 and "inside" in one_line(err), (name, err)
    assert listing(folder_path) == before and list(model_dir.iterdir()) == []


# ------------------------------------------------------------------------------------ 3. baseline validity
def test_baseline_valid_threshold():
    from unlearnable.audit.metrics import baseline_valid

    assert baseline_valid(0.95, 0.1) == (True, "")
    ok, why = baseline_valid(0.10, 0.1)
    assert not ok and "10.0%" in why and "32.5%" in why and "epochs" in why
    assert baseline_valid(0.63, 0.5)[0] and not baseline_valid(0.62, 0.5)[0]
    assert not baseline_valid(float("nan"), 0.1)[0] and not baseline_valid(None, 0.1)[0]


def _unlearnable_npz(path: Path) -> Path:
    """Test labels shifted by one class: whatever a victim learns, its clean test accuracy stays below chance+."""
    x, y = make_images(32, 1, 16, 4)
    xt, yt = make_images(16, 1, 16, 4, seed=2)
    np.savez(path, train_images=x, train_labels=y.astype(np.uint8)[:, None], test_images=xt,
             test_labels=((yt + 1) % 4).astype(np.uint8)[:, None])
    return path


def test_audit_whose_clean_victim_did_not_learn_is_marked_invalid_and_exits_3(tmp_path, capsys):
    src = _unlearnable_npz(tmp_path / "bad.npz")
    out = tmp_path / "audit"
    code, outp, err = run_cli(["audit", str(src), "--methods", "random", "--out", str(out), *FAST], capsys)
    assert code == 3, err
    assert "INVALID" in err and "did not learn" in err
    rows = (out / "audit.csv").read_text().splitlines()
    assert rows[0].endswith(",valid") and all(r.endswith(",no") for r in rows[1:])
    assert "(invalid)" in (out / "audit.md").read_text() and (out / "heatmap.png").stat().st_size > 0


def test_evaluate_invalid_baseline_exits_3_with_results_marked(tmp_path, capsys):
    src = _unlearnable_npz(tmp_path / "bad.npz")
    prot = tmp_path / "prot"
    assert run_cli(["protect", str(src), "-m", "random", "-o", str(prot)], capsys)[0] == 0
    code, _, err = run_cli(["evaluate", "--protected", str(prot), "--clean", str(src), "-o", str(tmp_path / "r"),
                            *FAST], capsys)
    assert code == 3 and "INVALID" in err
    res = strict_load(tmp_path / "r" / "results.json")
    assert res["valid"] is False and "did not learn" in res["invalid_reason"]


# ------------------------------------------------------------------------------------ 6 + 4. strict JSON, progress
def test_small_protect_and_evaluate_write_strict_json_and_log_progress_lines(npz_path, tmp_path, capsys):
    prot, res = tmp_path / "prot", tmp_path / "res"
    code, _, err = run_cli(["protect", str(npz_path), "-m", "cuda", "-o", str(prot)], capsys)
    assert code == 0, err
    man = strict_load(prot / "manifest.json")
    assert man["metrics"]["test"]["psnr_db"] is None and "no image changed" in man["metrics"]["test"]["psnr_note"]
    code, _, err = run_cli(["evaluate", "--protected", str(prot), "--clean", str(npz_path), "-o", str(res),
                            "--model", "smallcnn", "--epochs", "2", "--batch-size", "8", "--device", "cpu"], capsys)
    assert code in (0, 3), err
    assert "\r" not in err  # not a terminal: plain lines, no bar redraws
    assert re.search(r"protected victim: epoch 1/2 \(50%\).*test_acc", err), err
    assert re.search(r"clean victim: epoch 2/2 \(100%\)", err), err
    files = list(tmp_path.rglob("*.json"))
    assert len(files) >= 2
    for f in files:
        strict_load(f)


def test_write_json_turns_non_finite_numbers_into_null_with_a_note(tmp_path):
    from unlearnable.utils import write_json

    write_json(tmp_path / "x.json", {"a": float("inf"), "b": [1.0, float("nan")], "c": {"d": -float("inf")}})
    got = strict_load(tmp_path / "x.json")
    assert got["a"] is None and got["b"] == [1.0, None] and got["c"]["d"] is None
    assert got["non_finite"] == {"a": "inf", "b.1": "nan", "c.d": "-inf"}


def test_progress_prints_lines_per_ten_percent_off_a_terminal(capsys):
    from unlearnable.log import Progress

    with Progress(50, "work", "batch") as p:
        for _ in range(50):
            p.update(1)
    err = capsys.readouterr().err
    assert "\r" not in err and err.count("work: batch") == 10 and "work: batch 50/50 (100%)" in err


def test_progress_lines_say_the_time_elapsed_and_left(capsys, monkeypatch):
    """A batch log shows how long a run has taken and how long it will still take, at the rate so far; a resumed
    run's rate counts only what it did itself."""
    import unlearnable.log as L

    now = [100.0]
    monkeypatch.setattr(L, "monotonic", lambda: now[0])
    with L.Progress(10, "victim", "epoch", every=0.5) as p:
        now[0] += 30.0
        p.update(1, line=True, loss=0.5)  # 1 of 10 in 30 s: 9 more at that rate
        now[0] += 120.0
        p.update(4)  # 5 of 10 in 150 s (the 50% line)
    with L.Progress(10, "resumed", "epoch", initial=8) as p:  # 8 done before: the rate is this run's alone
        now[0] += 3000.0
        p.update(1, line=True)
        now[0] += 4000.0
        p.update(1, line=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "victim: epoch 1/10 (10%)  loss 0.500  [30 s, ~4 min 30 s left]"
    assert lines[1] == "victim: epoch 5/10 (50%)  [2 min 30 s, ~2 min 30 s left]"
    assert lines[2] == "resumed: epoch 9/10 (90%)  [50 min 0 s, ~50 min 0 s left]"
    assert lines[3] == "resumed: epoch 10/10 (100%)  [1 h 56 min]"  # done: no time left to show
    assert [L.duration(x) for x in (0.4, 59.6, 3599, 7260)] == ["0 s", "1 min 0 s", "59 min 59 s", "2 h 01 min"]


def test_cuda_chunk_default_agrees_with_the_docs():
    from unlearnable.protect import METHODS

    docs = (Path(__file__).parents[2] / "docs" / "methods.md").read_text()
    default = METHODS.get("cuda").Params().chunk
    assert re.search(rf"\| `chunk` \| {default} \|", docs), "docs/methods.md disagrees with CUDA's chunk default"


# ------------------------------------------------------------------------------------ 10 + 7. errors, leftovers
def _hidden(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_unexpected_error_gives_one_line_a_saved_traceback_and_no_leftovers(npz_path, tmp_path, capsys,
                                                                             monkeypatch):
    import unlearnable.audit.evaluate as ev

    def boom(*a, **k):
        raise RuntimeError("simulated failure inside training")

    monkeypatch.setattr(ev, "train_classifier", boom)
    out = tmp_path / "res"
    code, _, err = run_cli(["evaluate", "--protected", str(npz_path), "--clean", str(npz_path), "-o", str(out),
                            *FAST], capsys)
    line = one_line(err)
    assert code == 1 and "RuntimeError: simulated failure inside training" in line and "evaluate" in line
    log = Path(re.search(r"traceback saved to (\S+)", line).group(1))
    assert "Traceback" in log.read_text() and "boom" in log.read_text()
    log.unlink()
    assert not out.exists() and _hidden(tmp_path) == []  # no empty .res.partial-… folder


def test_failed_evaluate_keeps_checkpoints_and_says_so(npz_path, tmp_path, capsys, monkeypatch):
    import unlearnable.audit.evaluate as ev

    real, calls = ev.train_and_test, []

    def second_fails(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError
        return real(*a, **k)

    monkeypatch.setattr(ev, "train_and_test", second_fails)
    out = tmp_path / "res"
    code, _, err = run_cli(["evaluate", "--protected", str(npz_path), "--clean", str(npz_path), "-o", str(out),
                            *FAST], capsys)
    line = one_line(err)
    kept = _hidden(tmp_path)
    assert code == 1 and "MemoryError" in line and len(kept) == 1 and kept[0] in line and "resume" in line
    Path(re.search(r"traceback saved to (\S+?)[ (]", line + " ").group(1)).unlink()


def test_cli_uses_no_private_typer_module():
    src = (Path(__file__).parents[2] / "src" / "unlearnable" / "cli" / "__init__.py").read_text()
    assert "typer._click" not in src and "_click" not in src


# ------------------------------------------------------------------------------------ 8. help and listings
@pytest.mark.parametrize("command", [[], ["protect"], ["evaluate"], ["audit"], ["sweep"], ["demo"],
                                     ["segment", "train"], ["forget"], ["datasets"]])
def test_help_is_readable_at_80_columns(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli([*command, "--help"], capsys)
    assert code == 0
    assert "<bool>" not in out and "<list" not in out and "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 80, out


def test_help_lists_every_strategy_and_3d_model_whole(capsys, monkeypatch):
    from unlearnable.forget import STRATEGIES
    from unlearnable.models.seg3d import SEG_MODELS

    monkeypatch.setenv("COLUMNS", "80")
    out = run_cli(["forget", "--help"], capsys)[1] + run_cli(["segment", "train", "--help"], capsys)[1]
    for name in [*STRATEGIES.names(), *SEG_MODELS.names()]:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", out), name


def test_version(capsys):
    import unlearnable

    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"unlearnable {unlearnable.__version__}"


def test_datasets_is_the_complete_catalogue(capsys, monkeypatch):
    from unlearnable.data.formats import FORMATS
    from unlearnable.data.formats.builtin import BUILTINS
    from unlearnable.forget import STRATEGIES
    from unlearnable.models import MODELS
    from unlearnable.models.seg3d import SEG_MODELS
    from unlearnable.protect import METHODS
    from unlearnable.train.defenses import DEFENSES

    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run_cli(["datasets"], capsys)
    assert code == 0 and "`" not in out and "brain-phantoms" in out
    words = set(re.findall(r"[\w.-]+", out))
    for reg in (FORMATS, METHODS, DEFENSES, MODELS, SEG_MODELS, STRATEGIES):
        assert set(reg.names()) <= words, reg.what
    assert set(BUILTINS) <= words



def test_evaluate_resumes_only_on_the_same_data(grey_set, rgb_set, tmp_path):
    """The checkpoint folder of `evaluate` changes with the protected or the clean data (a label, one grey level,
    the training rows) and with the defences or mix; not with anything else."""
    from dataclasses import replace

    import torch

    from unlearnable.cli.evaluate_cmds import work_dir

    out = tmp_path / "res"
    here = work_dir(out, grey_set, rgb_set, ["none"], 1.0)
    assert here.parent == tmp_path and here.name.startswith(".res.partial-")
    assert work_dir(out, grey_set, rgb_set, ["none"], 1.0) == here
    moved = grey_set.images.clone()
    moved[0, 0, 0, 0] ^= 1
    others = {work_dir(out, grey_set.with_images(moved, torch.arange(len(grey_set))), rgb_set, ["none"], 1.0),
              work_dir(out, replace(grey_set, labels=grey_set.labels.flip(0)), rgb_set, ["none"], 1.0),
              work_dir(out, grey_set, replace(rgb_set, labels=rgb_set.labels.flip(0)), ["none"], 1.0),
              work_dir(out, grey_set, replace(rgb_set, splits=("test",) + rgb_set.splits[1:]), ["none"], 1.0),
              work_dir(out, grey_set, rgb_set, ["grayscale"], 1.0),
              work_dir(out, grey_set, rgb_set, ["none"], 0.5)}
    assert here not in others and len(others) == 6
