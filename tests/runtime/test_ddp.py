"""Real multi-process runs: torchrun with two processes and the gloo backend on CPU."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from helpers import torchrun, torchrun_status
from unlearnable.errors import UserError
from unlearnable.runtime import distributed as D


@pytest.mark.distributed
def test_evaluate_under_torchrun_two_processes(npz_path, tmp_path):
    prot = tmp_path / "prot"
    r = subprocess.run([sys.executable, "-m", "unlearnable", "protect", str(npz_path), "-m", "cuda", "-o", str(prot)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "audit"
    r = torchrun(["evaluate", "--protected", str(prot), "--clean", str(npz_path), "--model", "smallcnn",
                  "--epochs", "2", "--batch-size", "8", "--out", str(out), "--device", "cpu"], tmp_path)
    res = json.loads((out / "results.json").read_text())
    # 24 tiny training images and 2 epochs: the clean victim may not learn, and then the audit says so (exit 3)
    assert torchrun_status(r) == (0 if res["valid"] else 3), r.stderr[-3000:]
    setup = res["setup"]
    assert setup["world_size"] == 2 and setup["per_rank_batch_size"] == 4 and setup["backend"] == "gloo"
    assert setup["launcher"] == "torchrun"
    assert 0.0 <= res["clean_acc"] <= 1.0 and 0.0 <= res["protected_acc"] <= 1.0
    # the test split has 12 images: un-padded evaluation gives multiples of 1/12, padded would not
    assert abs(res["clean_acc"] * 12 - round(res["clean_acc"] * 12)) < 1e-9
    # rank 0 alone logs the start-up line
    assert r.stderr.count("victim 'smallcnn'") == 1


def test_per_rank_batch_refuses_a_global_batch_that_does_not_divide(monkeypatch):
    """The rule the torchrun test below checks end to end, in-process with a pretend world of two ranks."""
    monkeypatch.setattr(D, "_INFO", dataclasses.replace(D.info(), world_size=2))
    rule = r"^--batch-size 7: the global batch must be a multiple of the world size \(2\)$"
    with pytest.raises(UserError, match=rule):
        D.per_rank_batch(7)
    with pytest.raises(UserError, match="world size"):
        D.per_rank_batch(1)
    assert D.per_rank_batch(8) == 4


@pytest.mark.slow  # ~25 s under load for two interpreter starts; the rule itself is tested in-process above
@pytest.mark.distributed
def test_global_batch_must_divide_over_ranks(npz_path, tmp_path):
    r = torchrun(["evaluate", "--protected", str(npz_path), "--clean", str(npz_path), "--model", "smallcnn",
                  "--batch-size", "7", "--out", str(tmp_path / "o"), "--device", "cpu"], tmp_path)
    assert r.returncode != 0
    assert "global batch must be a multiple of the world size (2)" in r.stderr
    assert not (tmp_path / "o").exists()


def test_launcher_variables_are_mapped():
    assert D.launcher_env({})[:4] == ("single", 0, 1, 0)
    slurm = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_NODELIST": "gpu[07-08]",
             "SLURM_JOB_ID": "1234"}
    assert D.launcher_env(slurm) == ("slurm", 3, 8, 1, "gpu07", "29734")
    lsf = {"JSM_NAMESPACE_RANK": "5", "JSM_NAMESPACE_SIZE": "12", "JSM_NAMESPACE_LOCAL_RANK": "2",
           "LSB_MCPU_HOSTS": "batch1 1 f01n02 42 f01n03 42", "LSB_JOBID": "77"}
    assert D.launcher_env(lsf) == ("lsf", 5, 12, 2, "f01n02", "29577")
    ompi = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
            "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234"}
    assert D.launcher_env(ompi) == ("openmpi", 1, 2, 1, "10.0.0.1", "1234")
    torchrun_env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    assert D.launcher_env(torchrun_env)[:4] == ("torchrun", 1, 4, 1)  # torchrun inside an allocation wins
    assert D.expand_hostlist("a[1-3],b,c[09-10]") == ["a1", "a2", "a3", "b", "c09", "c10"]


@pytest.mark.distributed
def test_protect_verify_under_torchrun_two_processes(npz_path, tmp_path):
    out = tmp_path / "prot"
    r = torchrun(["protect", str(npz_path), "--method", "tiles", "--out", str(out), "--verify", "--verify-epochs", "2",
                  "--device", "cpu"], tmp_path)
    v = json.loads((out / "manifest.json").read_text())["verify"]
    assert torchrun_status(r) == (3 if v["verdict"] == "invalid" else 0), r.stderr[-3000:]
    assert v["victim"] == "smallcnn" and v["verdict"] in ("protected", "not protected", "invalid")
    # the test split has 12 images, evaluated once over both ranks: accuracies are multiples of 1/12
    assert abs(v["clean_acc"] * 12 - round(v["clean_acc"] * 12)) < 1e-3
    assert sum(map(sum, v["confusion"])) == 12  # the confusion matrix is summed over the two ranks' shares once
    assert r.stderr.count("verify: training") == 1  # rank 0 alone logs
