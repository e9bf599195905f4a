"""``segment train --shards`` and ``forget --strategy sisa`` through the real CLI (issue 10, exact unlearning)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from unlearnable.runtime import checkpoint as CK
from unlearnable.segment.shards import ShardEnsemble
from unlearnable.segment.train import load_model

from .conftest import TINY, TRAIN_ARGS, exit_code


@pytest.fixture(scope="module")
def sisa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sisa") / "model"
    assert exit_code(["segment", "train", TINY, "--out", str(out), *TRAIN_ARGS, "--shards", "2", "--slices", "2"]) == 0
    return out


@pytest.mark.slow  # ~1 min on a loaded 2-core machine; the unit test in test_unlearning_goals.py covers the logic
def test_sharded_model_folder(sisa_model: Path) -> None:
    meta = json.loads((sisa_model / "model.json").read_text())
    plan = meta["sisa"]["plan"]
    assert meta["arch"]["shards"] == 2 and len(plan) == 2 and all(len(sh) == 2 for sh in plan)
    assert sorted(i for sh in plan for sl in sh for i in sl) == sorted(meta["train_ids"])
    for k in range(2):
        for r in range(2):
            state = CK.load(sisa_model / "shards" / str(k) / f"slice-{r}.pt")
            assert state["seen"] == [i for sl in plan[k][:r + 1] for i in sl]
    model, _ = load_model(sisa_model)
    assert isinstance(model, ShardEnsemble) and len(model.members) == 2


@pytest.mark.slow
def test_forget_sisa_is_exact_and_retrains_one_shard(sisa_model: Path, tmp_path: Path) -> None:
    meta = json.loads((sisa_model / "model.json").read_text())
    target = meta["sisa"]["plan"][0][1][0]
    out = tmp_path / "forgot"
    assert exit_code(["forget", str(sisa_model), TINY, "--forget", target, "--strategy", "sisa,retrain",
                      "--epochs", "2", "--out", str(out), "--device", "cpu"]) == 0
    r = json.loads((out / "results.json").read_text())["strategies"]["sisa"]["2"]
    assert r["guarantee"] == "exact" and list(r["retrained_shards"]) == ["0"]
    assert r["retrained_shards"]["0"]["from_slice"] == 1 and 0 < r["steps_rel_retrain"] < 1  # cheaper than retrain
    rec = json.loads((out / "erasure_record.json").read_text())
    assert rec["guarantee"]["sisa"].startswith("exact") and rec["guarantee"]["retrain"].startswith("exact")
    after = out / "models" / "sisa" / "2"
    new_meta = json.loads((after / "model.json").read_text())
    assert target not in [i for sh in new_meta["sisa"]["plan"] for sl in sh for i in sl]
    for k in range(2):  # every slice checkpoint of the unlearned model excludes the subject
        for s in range(2):
            assert target not in CK.load(after / "shards" / str(k) / f"slice-{s}.pt")["seen"]
    kept = CK.load(after / "shards" / "1" / "slice-1.pt")["model"]  # the untouched shard is copied as it was
    orig = CK.load(sisa_model / "shards" / "1" / "slice-1.pt")["model"]
    assert all((kept[k] == v).all() for k, v in orig.items())
    retrained = json.loads((out / "models" / "retrain" / "2" / "model.json").read_text())
    assert "sisa" not in retrained and "shards" not in retrained["arch"]


def test_sisa_needs_a_sharded_model(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    sid = json.loads((tiny_model_dir / "model.json").read_text())["train_ids"][0]
    code = exit_code(["forget", str(tiny_model_dir), TINY, "--forget", sid, "--strategy", "sisa", "--epochs", "1",
                      "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "was not trained with 'segment train --shards S'" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())
