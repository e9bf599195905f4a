from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unlearnable.segment.train import load_model

from .conftest import TINY, TRAIN_ARGS, exit_code


def test_segment_train_writes_a_model_folder(tiny_model_dir: Path) -> None:
    meta = json.loads((tiny_model_dir / "model.json").read_text())
    assert meta["arch"] == {"name": "resnet10", "width": 4, "in_channels": 1, "num_classes": 4}
    assert len(meta["train_ids"]) == 4 and len(meta["test_ids"]) == 2
    assert not set(meta["train_ids"]) & set(meta["test_ids"])
    assert len(meta["training"]["loss"]) == 2 and 0.0 <= meta["scores"]["test"]["dice"] <= 1.0
    model, _ = load_model(tiny_model_dir)
    assert model(torch.rand(1, 1, 16, 16, 16)).shape == (1, 4, 16, 16, 16)
    assert not list(tiny_model_dir.parent.glob(".model.*"))  # no temp or checkpoint folders left behind


@pytest.mark.parametrize("bad, message", [
    (["--model", "resnet11"], "did you mean"),
    (["--patch", "12"], "multiple of 8"),
    (["--batch-size", "0"], "multiple of the world size"),
])
def test_segment_train_bad_input(tmp_path: Path, capsys, bad: list[str], message: str) -> None:
    out = tmp_path / "m"
    assert exit_code(["segment", "train", TINY, "--out", str(out), *TRAIN_ARGS, *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_unknown_source_is_one_line(tmp_path: Path, capsys) -> None:
    assert exit_code(["segment", "train", str(tmp_path / "nope"), "--out", str(tmp_path / "m")]) == 2
    assert "MRBrainS18" in capsys.readouterr().err


@pytest.mark.distributed
def test_segment_train_two_processes_gloo(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "unlearnable",
           "segment", "train", TINY, "--out", str(out), *TRAIN_ARGS]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((out / "model.json").read_text())
    assert meta["training"]["world_size"] == 2 and meta["training"]["per_rank_batch"] == 1
    assert r.stdout.count("wrote ") == 1  # only rank 0 reports and writes
    load_model(out)
