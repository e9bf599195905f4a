"""GPU-readiness on a CPU: the precision layer, --sync-bn, the device benchmark's CPU path, and 1-vs-2-process
equality of the sharded EM noise pass and of an audit cell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import BENCH_DIR, load_bench, torchrun, torchrun_status
from unlearnable.errors import UserError
from unlearnable.protect.base import METHODS
from unlearnable.protect.keys import Key
from unlearnable.runtime import distributed as D
from unlearnable.runtime.precision import Accel, autocast, input_grad
from unlearnable.train.loop import Recipe, train_classifier

BENCH = BENCH_DIR / "gpu.py"


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unlearnable", *args], cwd=cwd, capture_output=True, text=True)


def test_bench_gpu_quick_runs_on_cpu(tmp_path, monkeypatch, capsys):
    mod = load_bench("gpu")
    out = tmp_path / "gpu.json"
    monkeypatch.setattr(sys, "argv", ["gpu.py", "--device", "cpu", "--quick", "--out", str(out)])
    mod.main()
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())  # one JSON object, printed and written
    res = printed["results"]
    assert set(res) == {"cuda_protection", "uc_surrogate_epoch", "em_round", "victim_epoch_smallcnn",
                        "victim_epoch_resnet18", "seg3d_train_step"}
    for name, by_prec in res.items():
        assert by_prec["fp32"]["ms_per_step"] > 0, name
        if name != "cuda_protection":  # model-free: no autocast path, said so in its note
            assert by_prec["bf16"]["ms_per_step"] > 0, name
    assert res["seg3d_train_step"]["bf16"]["voxels_per_s"] > 0
    assert printed["device_name"] == "cpu" and printed["quick"] is True and printed["repeats"] == mod.REPEATS
    assert printed["ddp_scaling"] is None and "not CUDA" in printed["ddp_note"]


def test_bench_gpu_times_the_median_of_its_repeats():
    mod = load_bench("gpu")
    delays = iter([0.05, 0.0, 0.2])
    assert 0.04 < mod.synced("cpu", lambda: time.sleep(next(delays)), repeats=3) < 0.15  # 0.05 s, not 0.0 or 0.2


@pytest.mark.slow  # the quick benchmark plus a 2-process torchrun: ~40 s on the shared 2-core machine
@pytest.mark.distributed
def test_bench_gpu_measures_ddp_scaling_over_processes(tmp_path):
    """The scaling branch for real: torchrun starts 2 gloo workers that train the victim data-parallel."""
    out = tmp_path / "gpu.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--quick", "--ddp-procs", "2", "--out",
                        str(out)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    ddp = res["ddp_scaling"]
    assert res["ddp_note"] is None and ddp["processes"] == 2 and ddp["backend"] == "gloo"
    assert ddp["images_per_s"] > 0 and ddp["efficiency"] == pytest.approx(
        ddp["images_per_s"] / (2 * res["results"]["victim_epoch_resnet18"]["fp32"]["images_per_s"]))


def test_bf16_and_fp16_victims_train_on_cpu_and_are_recorded(grey_set):
    x, y = grey_set.images, grey_set.labels
    for prec in ("bf16", "fp16"):
        r = Recipe(model="smallcnn", epochs=1, batch_size=8, lr=0.05, precision=prec)
        _, hist = train_classifier(x, y, grey_set.num_classes, r, "cpu")
        s = hist.setup
        assert s["precision"] == prec and s["autocast"] and s["grad_scaler"] == (prec == "fp16")
        assert s["sync_bn"] == "off" and s["recipe"]["precision"] == prec and not s["channels_last"]
        assert torch.isfinite(torch.tensor(hist.epochs[-1]["train_loss"]))


def test_autocast_really_lowers_precision_on_cpu():
    lin = torch.nn.Linear(4, 4)
    with autocast("cpu", "bf16"):
        assert lin(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert lin(torch.randn(2, 4)).dtype == torch.float32
    # fp16 perturbation gradients are computed from a scaled loss and scaled back: same value as unscaled
    w = torch.randn(3, requires_grad=True)
    assert torch.allclose(input_grad((w * 2).sum(), w, "fp16"), torch.full((3,), 2.0))


def test_bad_precision_is_one_line(npz_path, tmp_path):
    with pytest.raises(UserError, match="--precision"):
        Recipe(precision="fp8").validate()
    r = _cli(["protect", str(npz_path), "-m", "cuda", "-o", str(tmp_path / "o"), "--precision", "fp8"], tmp_path)
    assert r.returncode == 2 and "--precision" in r.stderr and not (tmp_path / "o").exists()


def test_sync_bn_is_a_recorded_noop_with_one_process_and_refused_on_cpu_ranks(monkeypatch):
    assert D.sync_bn_state(False) == "off"
    assert D.sync_bn_state(True) == "no-op (1 process)"
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert D.wrap(model, sync_bn=True) is model  # one process: nothing converted
    monkeypatch.setattr(D, "_INFO", D.DistInfo(rank=0, world_size=2, backend="gloo", device="cpu"))
    with pytest.raises(UserError, match="--sync-bn: SyncBatchNorm runs on GPUs only"):
        D.sync_bn_state(True)


def test_em_bf16_keeps_the_budget(grey_set):
    algo = METHODS.get("em")(accel=Accel("bf16"), **METHODS.get("em").test_params)
    out = algo.apply(grey_set, algo.fit(grey_set, Key.from_seed(3)))
    diff = (out.int() - grey_set.images.int()).abs().max()
    assert out.dtype == torch.uint8 and int(diff) <= 8


def test_gather_rows_is_identity_in_one_process():
    t = torch.arange(12.0).view(6, 2)
    assert D.gather_rows(t, [torch.tensor([0, 3, 5])]) is t


@pytest.mark.slow  # two torchrun starts and three EM fits: about 45 s on the shared 2-core machine
@pytest.mark.distributed
def test_em_two_processes_give_the_same_bytes_as_one(npz_path, tmp_path):
    """The EM noise pass is sharded by whole batches; the surrogate steps are the same on every rank, so two gloo
    ranks must write exactly the bytes that one process writes (same key, same seed)."""
    from unlearnable.protect.run import load_output

    args = ["protect", str(npz_path), "-m", "em", "--param", "max_outer=2", "--param", "train_steps=2",
            "--param", "pgd_steps=3", "--param", "batch_size=4", "--key", str(tmp_path / "k.key"), "--device", "cpu"]
    r1 = _cli([*args, "-o", str(tmp_path / "one")], tmp_path)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = torchrun([*args, "-o", str(tmp_path / "two")], tmp_path)
    assert torchrun_status(r2) == 0, r2.stderr[-3000:]
    one, m1 = load_output(tmp_path / "one")
    two, m2 = load_output(tmp_path / "two")
    assert m2["runtime"]["world_size"] == 2 and m1["runtime"]["world_size"] == 1
    assert torch.equal(one.images, two.images)
    assert not torch.equal(one.images, load_output(npz_path)[0].images)  # it did protect something
    assert m1["output"]["sha256"] == m2["output"]["sha256"]


@pytest.mark.slow
@pytest.mark.distributed
def test_audit_cell_two_processes_match_one(npz_path, tmp_path):
    """An audit cell under torchrun matches one process. The victim is the ViT (LayerNorm: no batch statistics,
    no dropout), so DDP's average of the two ranks' half-batch mean gradients equals the one-process full-batch mean
    up to float32 summation order (24 training images, global batch 8: equal halves, no padding). That rounding
    (~1e-7 relative per step) stays far below the tolerances: losses within 1e-4 relative, accuracies equal."""
    args = ["audit", str(npz_path), "--methods", "cuda", "--defenses", "none", "--model", "vit", "--epochs", "2",
            "--batch-size", "8", "--lr", "0.01", "--device", "cpu"]
    r1 = _cli([*args, "--out", str(tmp_path / "one")], tmp_path)
    r2 = torchrun([*args, "--out", str(tmp_path / "two")], tmp_path)
    assert r1.returncode in (0, 3), r1.stderr[-2000:]
    assert torchrun_status(r2) == r1.returncode, r2.stderr[-3000:]

    def cells(root: Path) -> dict[str, dict]:
        return {d.name: json.loads((d / "results.json").read_text()) for d in (root / "cells").iterdir()}

    c1, c2 = cells(tmp_path / "one"), cells(tmp_path / "two")
    assert set(c1) == set(c2) and len(c1) == 2  # the clean baseline and the cuda cell, same names
    for name in c1:
        a, b = c1[name], c2[name]
        assert a["clean_acc"] == b["clean_acc"] and a["protected_acc"] == b["protected_acc"], name
        for ea, eb in zip(a["curve"] if "curve" in a else a["curves"]["protected"],
                          b["curve"] if "curve" in b else b["curves"]["protected"], strict=True):
            assert ea["train_loss"] == pytest.approx(eb["train_loss"], rel=1e-4), name
    assert (tmp_path / "two" / "audit.csv").read_text() == (tmp_path / "one" / "audit.csv").read_text()


_APPLY_SCRIPT = """
import hashlib, json, os, sys, torch
from unlearnable.data import ImageSet
from unlearnable.protect import protect
from unlearnable.runtime import distributed as D
D.init_from_env("cpu")
assert D.world_size() == int(os.environ.get("WORLD_SIZE", "1"))  # really sharded under torchrun
g = torch.Generator().manual_seed(0)
n = 13  # not a multiple of the world size: the shards differ in length
ds = ImageSet(torch.randint(0, 256, (n, 3, 12, 12), generator=g, dtype=torch.uint8), torch.arange(n) % 3,
              tuple(f"s{i}" for i in range(n)), ("train",) * n, ("a", "b", "c"))
out = {m: hashlib.sha256(protect(ds, m, key=5).images.numpy().tobytes()).hexdigest() for m in sys.argv[2].split(",")}
if D.is_main():
    open(sys.argv[1], "w").write(json.dumps(out))
D.barrier()  # leave together: a rank that exits while its peer still holds the group can abort it (SIGABRT)
D.shutdown()
"""


@pytest.mark.slow  # two interpreter starts plus a 2-process torchrun: ~30 s on the shared machine
@pytest.mark.distributed
def test_model_free_methods_apply_sharded_over_two_processes(tmp_path):
    """ul.protect under torchrun: each rank perturbs its share, the shares are gathered; same bytes as one process."""
    script = tmp_path / "apply.py"
    script.write_text(_APPLY_SCRIPT)
    methods = "tiles,ar,cuda,lsp,ops,random"
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.json"), methods], capture_output=True,
                         text=True, cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    env = dict(os.environ, OMP_NUM_THREADS="1")
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                          str(script), str(tmp_path / "two.json"), methods], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert a == b and len(a) == 6


_EM_SCRIPT = """
import hashlib, json, os, sys, torch
from unlearnable.data import ImageSet
from unlearnable.protect.base import METHODS
from unlearnable.protect.keys import Key
from unlearnable.runtime import distributed as D
D.init_from_env("cpu")
assert D.world_size() == int(os.environ.get("WORLD_SIZE", "1"))
g = torch.Generator().manual_seed(1)
n = 22  # batches of 4: six, the last one short, so the ranks' shares differ
ds = ImageSet(torch.randint(0, 256, (n, 3, 12, 12), generator=g, dtype=torch.uint8), torch.arange(n) % 3,
              tuple(f"s{i}" for i in range(n)), ("train",) * n, ("a", "b", "c"))
tiny = {"max_outer": 2, "train_steps": 2, "pgd_steps": 3, "batch_size": 4, "stop_acc": 1.0}
runs = {"classwise": {"mode": "classwise"}, "augment": {"augment": 2}, "classwise+augment": {"mode": "classwise",
        "augment": 2}, "classwise-l2": {"mode": "classwise", "norm": "l2", "eps": 0.5},
        "robust": {"robust": 2 / 255, "robust_steps": 2, "augment": 2},
        "classwise+robust": {"mode": "classwise", "robust": 2 / 255, "robust_steps": 2}}
out = {}
for name, extra in runs.items():
    table = METHODS.get("em")(**tiny, **extra).fit(ds, Key.from_seed(9))
    out[name] = [hashlib.sha256(table.steps.numpy().tobytes()).hexdigest(), int(table.steps.abs().sum())]
if D.is_main():
    open(sys.argv[1], "w").write(json.dumps(out))
D.barrier()  # leave together: a rank that exits while its peer still holds the group can abort it (SIGABRT)
D.shutdown()
"""


@pytest.mark.slow  # one process and a 2-process torchrun, six small EM fits each: ~60 s on the shared machine
@pytest.mark.distributed
def test_classwise_and_augmented_em_two_processes_give_the_same_noise_as_one(tmp_path):
    """Class-wise EM all-reduces each descent step's class gradient (summed in float64); augmented EM draws each
    batch's crops from a generator keyed by (round, batch, step); robust EM's inner maximisation starts from zero.
    All must give one process's noise table, byte for byte, under two gloo ranks."""
    script = tmp_path / "em.py"
    script.write_text(_EM_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one.json")], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                          str(script), str(tmp_path / "two.json")], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert a == b and len(a) == 6
    assert all(total > 0 for _, total in a.values())  # every fit perturbed something
