"""Shared by the test folders: builders of tiny test data (images, MedMNIST archives, image folders), the CLI
runner, a two-process torchrun launcher and folder listings."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from unlearnable.data import ImageSet

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str):
    """The benchmark script ``bench/<name>.py`` as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_images(n: int, c: int, size: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-dependent blobs with noise, uint8 (N, H, W[, C]); learnable but not trivial."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    yy, xx = np.mgrid[0:size, 0:size] / size
    imgs = []
    for y in labels:
        cx, cy = 0.25 + 0.5 * (y % 2), 0.25 + 0.5 * ((y // 2) % 2)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.02) * 200
        img = blob[..., None] + rng.normal(0, 20, (size, size, c)) + 30
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
    arr = np.stack(imgs)
    return (arr[..., 0] if c == 1 else arr), labels


def write_medmnist(path: Path, n_train: int = 24, n_test: int = 12, c: int = 1, size: int = 16,
                   classes: int = 4, compressed: bool = True) -> Path:
    arrays = {}
    for split, n, seed in (("train", n_train, 0), ("val", 8, 1), ("test", n_test, 2)):
        x, y = make_images(n, c, size, classes, seed)
        arrays[f"{split}_images"] = x
        arrays[f"{split}_labels"] = y.astype(np.uint8)[:, None]
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def write_folder(root: Path, split_layout: bool = True, suffix: str = ".png", classes=("cat", "dog"),
                 per_class: int = 4, mode: str = "RGB") -> Path:
    x, y = make_images(per_class * len(classes) * 2, 3 if mode == "RGB" else 1, 16, len(classes))
    k = 0
    for split in ("train", "test") if split_layout else ("",):
        for ci, cname in enumerate(classes):
            d = root / split / cname if split_layout else root / cname
            d.mkdir(parents=True, exist_ok=True)
            for j in range(per_class):
                idx = np.flatnonzero(y == ci)[(j + k) % (len(y) // len(classes))]
                img = Image.fromarray(x[idx] if mode == "RGB" else x[idx])
                img.save(d / f"img{j}{suffix}")
        k += per_class
    return root


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run the real CLI entry point in-process; returns (exit code, stdout, stderr)."""

    from unlearnable.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = int(e.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def write_train_test_npz(path: Path, seed: int = 0, n: int = 16, c: int = 1, size: int = 16, classes: int = 4,
                         order: slice = slice(None)) -> Path:
    """A MedMNIST-style archive of ``n`` train images (``order`` re-orders them) and 8 test images."""
    x, y = make_images(n, c, size, classes, seed)
    xt, yt = make_images(8, c, size, classes, seed + 100)
    np.savez(path, train_images=x[order], train_labels=y[order, None].astype(np.uint8), test_images=xt,
             test_labels=yt[:, None].astype(np.uint8))
    return path


def quadrant_blobs(n: int = 64, size: int = 12, classes: int = 4, seed: int = 0) -> ImageSet:
    """Grey images whose class is a bright square in one quadrant, on textured noise: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(40, 120, (n, 1, size, size), generator=g)
    labels = torch.arange(n) % classes
    h = size // 2
    for i, k in enumerate(labels.tolist()):
        r, c = divmod(k, 2)
        img[i, :, r * h:(r + 1) * h, c * h:(c + 1) * h] += 100
    return ImageSet(img.to(torch.uint8), labels, tuple(f"s{i:03d}" for i in range(n)), ("train",) * n,
                    tuple("abcd"[:classes]))


def tiny_npz(path: Path) -> Path:
    """Train (24) and test (12) splits of 16x16 grey images, 3 classes told apart by a bright bar's row."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("test", 12)):
        x = rng.integers(0, 60, (n, 16, 16)).astype(np.uint8)
        y = np.arange(n) % 3
        for i, k in enumerate(y):
            x[i, 4 * k:4 * k + 6, 4:12] += 150
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y[:, None]
    np.savez(path, **arrays)
    return path


def listing(root: Path) -> set[str]:
    """Every path under ``root``, relative to it (what a command left behind)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def torchrun(args: list[str], tmp_path, nproc: int = 2, timeout: int = 300) -> subprocess.CompletedProcess:
    """``unlearnable ARGS`` as ``nproc`` torchrun processes (gloo on CPU), run in ``tmp_path``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
           "-m", "unlearnable", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


_SHARD_SCRIPT = """
import hashlib, json, sys, torch
sys.path.insert(0, sys.argv[2])
from helpers import quadrant_blobs
from unlearnable.protect import METHODS, Key
from unlearnable.runtime import distributed as D
D.init_from_env("cpu")
data = quadrant_blobs(n=40)
algo = METHODS.get(sys.argv[3])(**json.loads(sys.argv[4]))
out = algo.apply(data, algo.fit(data, Key.from_seed(5)))
if D.rank() == 0:
    json.dump({"sha": hashlib.sha256(out.numpy().tobytes()).hexdigest(), "world": D.world_size()},
              open(sys.argv[1], "w"))
D.barrier()  # leave together: a rank that exits while its peer still holds the group can abort it (SIGABRT)
D.shutdown()
"""


def sharded_fit_hashes(method: str, params: dict, tmp_path) -> tuple[dict, dict]:
    """Fit and apply ``method`` with ``params`` on :func:`quadrant_blobs` (40 images, key seed 5) once as one
    process and once under torchrun with two (gloo); returns rank 0's ``{"sha", "world"}`` of each run, so a test
    can check that sharding the fit over ranks gives the same bytes."""
    path = tmp_path / "shard.py"
    path.write_text(_SHARD_SCRIPT)
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = [str(path), "", tests_dir, method, json.dumps(params)]
    out = []
    two = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]
    for name, prefix in (("one", [sys.executable]), ("two", two)):
        args[1] = str(tmp_path / f"{name}.json")
        r = subprocess.run(prefix + args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        out.append(json.loads((tmp_path / f"{name}.json").read_text()))
    return out[0], out[1]


def torchrun_status(r: subprocess.CompletedProcess) -> int:
    """The ranks' exit status: torchrun itself turns any non-zero rank status into 1 and names it in its report."""
    if r.returncode == 0:
        return 0
    codes = {int(c) for c in re.findall(r"exitcode\s*:\s*(-?\d+)", r.stderr)} - {-15}  # -15: ranks torchrun stopped
    return codes.pop() if len(codes) == 1 else r.returncode


def scanner_affine() -> np.ndarray:
    """An oblique-free scanner affine: 0.958 x 0.958 x 3 mm voxels, offset origin."""
    a = np.diag([0.958, 0.958, 3.0, 1.0])
    a[:3, 3] = [-120.5, -110.0, -30.0]
    return a


def scanner_nifti(path: Path, data: np.ndarray, dtype=np.int16, slope: float | None = None, inter: float = 0.0,
                  descrip: bytes = b"3T scanner, bias corrected") -> None:
    """A NIfTI file as a scanner pipeline writes it: qform 1 / sform 2, mm + s, a description; ``slope`` None
    leaves the file unscaled (NaN scl_slope)."""
    img = nib.Nifti1Image(data.astype(dtype), None)
    h = img.header
    h.set_data_dtype(dtype)
    h.set_qform(scanner_affine(), 1)
    h.set_sform(scanner_affine(), 2)
    h.set_xyzt_units("mm", "sec")
    h["descrip"] = descrip
    if slope is not None:
        h.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
