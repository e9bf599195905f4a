from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearnable.forget.run import hash_id
from unlearnable.segment.train import load_model

from .conftest import TINY, exit_code

SPLITS = ("retain", "forget", "test")


@pytest.fixture(scope="module")
def forget_all(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    meta = json.loads((tiny_model_dir / "model.json").read_text())
    ids = meta["train_ids"][:2]
    out = tmp_path_factory.mktemp("forget") / "compare"
    code = exit_code(["forget", str(tiny_model_dir), TINY, "--forget", ",".join(ids), "--strategy", "all",
                       "--epochs", "1,2", "--out", str(out), "--device", "cpu"])
    assert code == 0
    return out, ids


def test_results_json_contract(forget_all) -> None:
    out, _ = forget_all
    r = json.loads((out / "results.json").read_text())
    for s in SPLITS:
        assert set(r["original"][s]) >= {"dice", "mae"} and 0 <= r["original"][s]["dice"] <= 1
    assert set(r["strategies"]) == {"noisy-label", "max-loss", "random-encoder", "fix-decoder", "finetune", "retrain"}
    for runs in r["strategies"].values():
        assert list(runs) == ["1", "2"]
        for h in runs.values():
            for s in SPLITS:
                assert isinstance(h[s]["dice"], float) and isinstance(h[s]["mae"], float)
            assert 0 <= h["mia_auc"] <= 1 and h["time_s"] > 0
            assert set(h["gap_to_retrain"]) == {"forget_dice", "test_dice", "mia_auc"}
    assert r["strategies"]["retrain"]["2"]["time_rel_retrain"] == 1.0
    assert r["strategies"]["retrain"]["1"]["gap_to_retrain"]["forget_dice"] == 0.0


def test_outputs_and_erasure_record(forget_all) -> None:
    out, ids = forget_all
    for f in ("dice_bars.png", "overlay.png", "report.md", "erasure_record.json"):
        assert (out / f).stat().st_size > 0
    rec = json.loads((out / "erasure_record.json").read_text())
    assert sorted(rec["request"]["subjects_sha256"]) == sorted(hash_id(i) for i in ids)
    assert len(rec["model_before"]["sha256"]) == 64
    after = rec["models_after"]["noisy-label"]["2"]
    assert after["sha256"] != rec["model_before"]["sha256"] and (out / after["path"]).exists()
    for f in out.rglob("*"):  # no raw forget id anywhere in the output
        if f.suffix in (".json", ".md"):
            assert not any(i in f.read_text() for i in ids), f
    model, meta = load_model(out / "models" / "noisy-label" / "2")
    assert meta["unlearning"]["strategy"] == "noisy-label" and not set(ids) & set(meta["train_ids"])
    assert not list(out.parent.glob(".compare*"))  # no checkpoints or temp folders left


def _bad(tmp_path: Path, model_dir: Path, capsys, extra: list[str], message: str) -> None:
    out = tmp_path / "out"
    args = ["forget", str(model_dir), TINY, "--out", str(out), "--epochs", "1", "--device", "cpu", *extra]
    assert exit_code(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # nothing written, not even checkpoints


def test_unknown_forget_id(tmp_path, tiny_model_dir, capsys) -> None:
    _bad(tmp_path, tiny_model_dir, capsys, ["--forget", "synth-00"], "unknown subject id in --forget 'synth-00'")


def test_forget_everyone(tmp_path, tiny_model_dir, capsys) -> None:
    ids = json.loads((tiny_model_dir / "model.json").read_text())["train_ids"]
    _bad(tmp_path, tiny_model_dir, capsys, ["--forget", ",".join(ids)], "nothing would be left to retain")


def test_forget_a_test_subject(tmp_path, tiny_model_dir, capsys) -> None:
    sid = json.loads((tiny_model_dir / "model.json").read_text())["test_ids"][0]
    _bad(tmp_path, tiny_model_dir, capsys, ["--forget", sid], "held out as a test subject")


@pytest.mark.parametrize("extra, message", [
    (["--strategy", "noisy-labels"], "did you mean 'noisy-label'"),
    (["--epochs", "0"], "horizons must be positive"),
])
def test_bad_options(tmp_path, tiny_model_dir, capsys, extra, message) -> None:
    _bad(tmp_path, tiny_model_dir, capsys, ["--forget", "synth-000", *extra], message)


def test_not_a_model_folder(tmp_path, capsys) -> None:
    (tmp_path / "m").mkdir()
    assert exit_code(["forget", str(tmp_path / "m"), TINY, "--forget", "x", "--out", str(tmp_path / "o")]) == 2
    assert "not a model folder" in capsys.readouterr().err
