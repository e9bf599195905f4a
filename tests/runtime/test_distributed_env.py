"""Launcher variables (torchrun, SLURM, LSF) and a real 2-process torchrun/gloo run of ``protect --method uc``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_npz
from unlearnable.runtime import distributed as D

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_launcher_env_torchrun_slurm_lsf() -> None:
    assert D.launcher_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n1",
                           "MASTER_PORT": "1234"}) == ("torchrun", 3, 8, 1, "n1", "1234")
    name, rank, world, local, addr, port = D.launcher_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "8",
                                                           "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4242",
                                                           "SLURM_JOB_NODELIST": "gpu[07-08]"})
    assert (name, rank, world, local, addr, port) == ("slurm", 5, 8, 1, "gpu07", str(29500 + 4242 % 1000))
    name, rank, world, local, addr, _ = D.launcher_env({"JSM_NAMESPACE_RANK": "2", "JSM_NAMESPACE_SIZE": "12",
                                                        "JSM_NAMESPACE_LOCAL_RANK": "2", "LSB_JOBID": "77",
                                                        "LSB_MCPU_HOSTS": "batch1 1 node3 42 node4 42"})
    assert (name, rank, world, local, addr) == ("lsf", 2, 12, 2, "node3")
    assert D.launcher_env({})[:3] == ("single", 0, 1)


def test_gather_shards_single_process_is_identity() -> None:
    t = torch.arange(10.0)[:, None]
    assert torch.equal(D.gather_shards(t, 10), t)


def _run(args: list[str], cwd: Path, nproc: int, **env_extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"} | env_extra
    pre = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"] \
        if nproc > 1 else [sys.executable, "-m"]
    return subprocess.run(pre + ["unlearnable", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow  # ~22 s; torchrun is covered in the default suite by evaluate, verify and segment
@pytest.mark.distributed
def test_torchrun_two_processes_protect_uc_matches_one_process(tmp_path: Path) -> None:
    """Same global batch on 2 ranks as on 1: the same perturbation (up to float rounding), written once."""
    tiny_npz(tmp_path / "d.npz")
    flags = ["protect", "d.npz", "--method", "uc", "--clusters", "3", "--epochs", "2", "--batch-size", "8",
             "--key", "k.key", "-p", "ssl_epochs=0", "-p", "width=8",
             "-p", "gen_width=8"]
    r2 = _run(flags + ["--out", "two"], tmp_path, 2)
    assert r2.returncode == 0, r2.stderr[-3000:]
    r1 = _run(flags + ["--out", "one"], tmp_path, 1)
    assert r1.returncode == 0, r1.stderr[-3000:]
    m = json.loads((tmp_path / "two" / "manifest.json").read_text())
    setup = m["fit"]["generator"]["setup"]
    assert setup["world_size"] == 2 and setup["per_rank_batch_size"] == 4 and setup["backend"] == "gloo"
    assert setup["launcher"] == "torchrun" and r2.stderr.count("wrote two") == 1
    a = np.load(tmp_path / "one" / "d.npz")["train_images"].astype(int)
    b = np.load(tmp_path / "two" / "d.npz")["train_images"].astype(int)
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01
    assert (tmp_path / "one" / "clusters.csv").read_text() == (tmp_path / "two" / "clusters.csv").read_text()


@pytest.mark.slow  # four 2-process runs: ~1 min on the shared 2-core machine
@pytest.mark.distributed
@pytest.mark.parametrize("write", [2, 6])  # inside the SimCLR stage; inside the generator stage
def test_torchrun_protect_uc_killed_mid_checkpoint_resumes_to_the_same_bytes(tmp_path: Path, write: int) -> None:
    """UC with its SimCLR surrogate on 2 ranks, killed half-way through a checkpoint write and resumed: the same
    files as an uninterrupted 2-rank run (every rank's augmentation generator and rank 0's batch-norm statistics
    come back; checkpoints 1-3 are SimCLR epochs, 4 K-means, 5-7 generator epochs)."""
    tiny_npz(tmp_path / "d.npz")
    flags = ["protect", "d.npz", "--method", "uc", "--clusters", "3", "--epochs", "3", "--batch-size", "8",
             "--key", "k.key", "-p", "ssl_epochs=3", "-p", "surrogate_batch_size=8", "-p", "width=8",
             "-p", "gen_width=8", "--device", "cpu"]
    assert _run(["protect", "d.npz", "--method", "tiles", "--key", "k.key", "--out", "keyonly"], tmp_path, 1)\
        .returncode == 0
    ref = _run(flags + ["--out", "ref"], tmp_path, 2)
    assert ref.returncode == 0, ref.stderr[-3000:]
    cut = _run(flags + ["--out", "cut"], tmp_path, 2, UNLEARNABLE_TEST_CRASH=f"write:{write}")
    assert cut.returncode != 0 and not (tmp_path / "cut").exists()
    again = _run(flags + ["--out", "cut", "--resume"], tmp_path, 2)
    assert again.returncode == 0 and "resuming" in again.stderr, again.stderr[-3000:]
    for name in ("d.npz", "clusters.csv"):
        assert (tmp_path / "ref" / name).read_bytes() == (tmp_path / "cut" / name).read_bytes(), name
