"""Device throughput of every trainer at fp32 and bf16, as ONE JSON object (synthetic in-memory data only).

    PYTHONPATH=src python3 bench/gpu.py --device cuda --out gpu.json     # full sizes: under 3 min on one H100
    PYTHONPATH=src python3 bench/gpu.py --device cpu --quick             # tiny sizes: seconds on a CPU

Measures, through the package's own code paths (so the numbers are what users get): CUDA protection (fit + apply),
one UC surrogate (SimCLR) epoch, one EM round (surrogate steps + noise pass), one victim epoch for ``smallcnn`` and
``resnet18``, and 3D segmentation training steps of the Med3D ResNet-10. Each is timed after a warm-up run (cuDNN
autotuning, allocator), between ``torch.cuda.synchronize()`` calls, as the median of ``REPEATS`` timed calls. With
more than one GPU visible, the victim epoch is re-run under torchrun on all of them (``--ddp-worker``, NCCL) and the
weak-scaling efficiency is reported; ``--ddp-procs N`` picks the process count (on a CPU: N gloo processes, which is
how the tests run that path).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from unlearnable.data.imageset import ImageSet
from unlearnable.models import build_model
from unlearnable.protect.base import METHODS
from unlearnable.protect.keys import Key
from unlearnable.protect.ssl import PROJ_DIM, train_ssl_surrogate
from unlearnable.runtime import distributed as D
from unlearnable.runtime.precision import Accel
from unlearnable.segment.train import PatchData, SegConfig, make_optimizer, train_epochs
from unlearnable.train.loop import Recipe, train_classifier

PRECISIONS = ("fp32", "bf16")
# Full: CIFAR-sized images, the papers' ResNet-18 surrogates and EM schedule (10 SGD + 20 descent steps per batch),
# Med3D ResNet-10 at its published width on 64^3 patches. Quick: the same code on sizes a CPU test runs in seconds.
SIZES = {
    "full": {"images": 10240, "image_size": 32, "batch": 256, "em_images": 4096, "surrogate": "resnet18",
             "em_train_steps": 10, "em_pgd_steps": 20, "seg_subjects": 16, "seg_volume": 96, "seg_patch": 64,
             "seg_width": 64},
    "quick": {"images": 8, "image_size": 8, "batch": 4, "em_images": 8, "surrogate": "smallcnn",
              "em_train_steps": 2, "em_pgd_steps": 2, "seg_subjects": 2, "seg_volume": 16, "seg_patch": 16,
              "seg_width": 4},
}


REPEATS = 3  # every figure is the median of this many timed calls (one call of 0.1-0.3 s swung 3D bf16 5x)


def synced(device: str, fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn()``, the GPU's queue drained before and after each."""
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def synthetic(n: int, size: int, classes: int = 10, channels: int = 3) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % classes  # every class present (the methods require it)
    return ImageSet(x, y, tuple(f"s{i}" for i in range(n)), ("train",) * n, tuple(f"c{k}" for k in range(classes)))


def rate(seconds: float, items: float, steps: int, unit: str) -> dict[str, float]:
    return {unit: items / seconds, "ms_per_step": 1000.0 * seconds / max(1, steps), "seconds": seconds}


def bench_cuda_protection(ds: ImageSet, device: str, batch: int) -> dict[str, float]:
    algo = METHODS.get("cuda")(device=device)
    key = Key.from_seed(0)
    algo.apply(ds.subset(torch.arange(min(len(ds), batch))), algo.fit(ds, key))  # warm-up
    s = synced(device, lambda: algo.apply(ds, algo.fit(ds, key)))
    chunk = max(1, (1 << 18) // ds.images[0].numel())  # the method's automatic chunk: one step
    return rate(s, len(ds), math.ceil(len(ds) / chunk), "images_per_s")


def bench_victim(ds: ImageSet, model: str, device: str, batch: int, precision: str) -> dict[str, float]:
    r = Recipe(model=model, epochs=1, batch_size=batch, lr=0.01, precision=precision)
    warm = min(len(ds), 2 * batch)
    train_classifier(ds.images[:warm], ds.labels[:warm], ds.num_classes, r, device)
    s = synced(device, lambda: train_classifier(ds.images, ds.labels, ds.num_classes, r, device))
    return rate(s, len(ds), math.ceil(len(ds) / batch), "images_per_s")


def bench_uc_surrogate(ds: ImageSet, device: str, batch: int, precision: str, arch: str) -> dict[str, float]:
    def epoch(images: torch.Tensor) -> None:
        torch.manual_seed(0)
        model = build_model(arch, ds.channels, PROJ_DIM, ds.size[0])
        train_ssl_surrogate(model, images, 1, batch, 1e-3, 0, device, accel=Accel(precision))

    epoch(ds.images[:2 * batch])
    s = synced(device, lambda: epoch(ds.images))
    return rate(s, len(ds), len(ds) // batch, "images_per_s")


def bench_em_round(ds: ImageSet, device: str, batch: int, precision: str, z: dict) -> dict[str, float]:
    params = {"surrogate": z["surrogate"], "max_outer": 1, "train_steps": z["em_train_steps"],
              "pgd_steps": z["em_pgd_steps"], "batch_size": batch}
    key = Key.from_seed(0)
    warm = ds.subset(torch.arange(min(len(ds), 2 * batch)))
    METHODS.get("em")(device=device, accel=Accel(precision), **params).fit(warm, key)
    algo = METHODS.get("em")(device=device, accel=Accel(precision), **params)
    s = synced(device, lambda: algo.fit(ds, key))
    steps = params["train_steps"] + params["pgd_steps"] * math.ceil(len(ds) / batch)  # SGD + noise descent steps
    return rate(s, len(ds), steps, "images_per_s")


def bench_seg(n: int, edge: int, patch: int, width: int, device: str, precision: str) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    vol = torch.randint(0, 256, (n, 1, edge, edge, edge), generator=g, dtype=torch.uint8)
    lab = torch.randint(0, 4, (n, edge, edge, edge), generator=g)
    data = PatchData(vol, lab, torch.zeros(n, dtype=torch.bool))
    cfg = SegConfig(model="resnet10", width=width, patch=patch, epochs=1, batch_size=2, patches_per_subject=2,
                    precision=precision)
    from unlearnable.models.seg3d import build_seg_model  # Med3D ResNet: no MONAI needed

    torch.manual_seed(0)
    model = build_seg_model(cfg.model, 1, 4, cfg.width).to(device)
    opt = make_optimizer(model.parameters(), cfg.lr)
    train_epochs(model, PatchData(vol[:1], lab[:1], data.forget[:1]), cfg, 0, 1, opt, device=device)  # warm-up
    s = synced(device, lambda: train_epochs(model, data, cfg, 0, 1, opt, device=device))
    steps = math.ceil(n * cfg.patches_per_subject / cfg.batch_size)
    return rate(s, n * cfg.patches_per_subject * patch ** 3, steps, "voxels_per_s")


def ddp_scaling(args: argparse.Namespace, single: dict[str, float]) -> tuple[dict | None, str]:
    """Weak scaling of the resnet18 victim epoch under torchrun (per-process batch fixed): over every visible GPU
    (NCCL), or over ``--ddp-procs`` processes (gloo on a CPU: that checks the path, its efficiency means little)."""
    cuda = args.device.startswith("cuda")
    gpus = torch.cuda.device_count() if cuda else 0
    procs = args.ddp_procs if args.ddp_procs is not None else gpus
    if cuda and procs > gpus:
        return None, f"not measured: --ddp-procs {procs} but {gpus} GPU(s) visible"
    if procs < 2:
        if not cuda:
            return None, "not measured: the device is not CUDA (--ddp-procs N runs N CPU processes)"
        return None, f"not measured: {gpus} GPU visible (DDP scaling needs at least 2)"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               str(Path(__file__).resolve()), "--ddp-worker", "--device", "cuda" if cuda else "cpu", "--out", str(out)]
        if args.quick:
            cmd.append("--quick")
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            return None, f"torchrun failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}"
        multi = json.loads(out.read_text())
    eff = multi["images_per_s"] / (procs * single["images_per_s"])
    return {"processes": procs, "backend": multi["backend"], "images_per_s": multi["images_per_s"],
            "single_process_images_per_s": single["images_per_s"], "efficiency": eff,
            "rule": "weak scaling: per-process batch fixed, global batch x processes"}, ""


def ddp_worker(args: argparse.Namespace) -> None:
    z = SIZES["quick" if args.quick else "full"]
    n, size, batch = z["images"], z["image_size"], z["batch"]
    info = D.init_from_env(args.device)
    try:
        ds = synthetic(n * info.world_size, size)
        res = bench_victim(ds, "resnet18", info.device, batch * info.world_size, "fp32")
        if D.is_main():
            Path(args.out).write_text(json.dumps(res | {"backend": info.backend, "world_size": info.world_size}))
    finally:
        D.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (cuda:N)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds on a CPU; for tests)")
    ap.add_argument("--out", default=None, help="also write the JSON object to this file")
    ap.add_argument("--ddp-procs", type=int, default=None, help="processes of the DDP scaling run (default: every "
                    "visible GPU; on a CPU, N gloo processes check the path)")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.device = D.resolve_device(args.device)
    if args.ddp_worker:
        return ddp_worker(args)
    t0 = time.perf_counter()
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
    z = SIZES["quick" if args.quick else "full"]
    n, size, batch = z["images"], z["image_size"], z["batch"]
    ds, ds_em = synthetic(n, size), synthetic(z["em_images"], size)
    res: dict[str, dict] = {"cuda_protection": {"fp32": bench_cuda_protection(ds, args.device, batch),
                                                "bf16": None, "note": "model-free: fixed filters in float32, no "
                                                "autocast path (the uint8 output must be exact by key)"}}
    for name, fn in {
        "uc_surrogate_epoch": lambda p: bench_uc_surrogate(ds, args.device, batch, p, z["surrogate"]),
        "em_round": lambda p: bench_em_round(ds_em, args.device, batch, p, z),
        "victim_epoch_smallcnn": lambda p: bench_victim(ds, "smallcnn", args.device, batch, p),
        "victim_epoch_resnet18": lambda p: bench_victim(ds, "resnet18", args.device, batch, p),
        "seg3d_train_step": lambda p: bench_seg(z["seg_subjects"], z["seg_volume"], z["seg_patch"], z["seg_width"],
                                                args.device, p),
    }.items():
        res[name] = {p: fn(p) for p in PRECISIONS}
    speed = {k: v["fp32"]["ms_per_step"] / v["bf16"]["ms_per_step"]
             for k, v in res.items() if v.get("bf16")}
    ddp, why = ddp_scaling(args, res["victim_epoch_resnet18"]["fp32"])
    cuda = args.device.startswith("cuda")
    out = {
        "benchmark": "gpu", "device": args.device,
        "device_name": torch.cuda.get_device_name(args.device) if cuda else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda if cuda else None,
        "threads": torch.get_num_threads(), "quick": args.quick, "repeats": REPEATS,
        "sizes": z | {"channels": 3, "seg_model": "resnet10 (Med3D)", "seg_batch": 2},
        "results": res, "bf16_speedup": speed, "ddp_scaling": ddp, "ddp_note": why or None,
        "wall_s": time.perf_counter() - t0,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        tmp = Path(args.out).with_name(f".{Path(args.out).name}.tmp-{os.getpid()}")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
