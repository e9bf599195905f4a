"""Benchmark Unlearnable Clusters: cost per generator epoch vs K, and DDP speed-up. Prints one JSON object.

    python bench/uc.py [--images 1024] [--epochs 2] [--batch-size 128] [--device cpu]

``epoch_s_k2`` / ``epoch_s_k10``: seconds per UC generator epoch with 2 and 10 clusters (one generator pass per
step over K codes, one pass over the data per epoch, so they should be about equal). ``ddp_speedup``: wall time of
the same generator training (same global batch) on 1 process over 2 processes, both started by torchrun with
gloo (CPU) or NCCL (GPU), each process with ``--threads`` CPU threads; it measures training only, not start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from unlearnable.protect.keys import Key  # noqa: E402
from unlearnable.protect.uc import UnlearnableClusters, _Standardised  # noqa: E402
from unlearnable.runtime import distributed as D  # noqa: E402


def generator_seconds(n: int, k: int, epochs: int, batch_size: int, device: str) -> float:
    """Wall seconds of ``epochs`` UC generator epochs on ``n`` random 28x28 grey images with ``k`` clusters."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    algo = UnlearnableClusters(clusters=k, epochs=epochs, batch_size=batch_size, ssl_epochs=0, device=device)
    from unlearnable.data import ImageSet

    ds = ImageSet(images, torch.zeros(n, dtype=torch.long), tuple(map(str, range(n))), ("train",) * n, ("x",))
    surrogate, _ = algo._surrogate(ds, Key.from_seed(0), None)
    assign = torch.arange(n) % k
    centers = torch.randn(k, surrogate.dim, generator=g)
    sur = _Standardised(surrogate, torch.zeros(surrogate.dim), torch.ones(surrogate.dim))
    D.barrier()
    t0 = time.perf_counter()
    algo._train_generator(images, assign, centers, sur, Key.from_seed(0), None)
    D.barrier()
    return time.perf_counter() - t0


def worker(args: argparse.Namespace) -> None:
    info = D.init_from_env(args.device)
    try:
        s = generator_seconds(args.n, 10, args.epochs, args.batch_size, info.device)
        if D.is_main():
            print(json.dumps({"world_size": info.world_size, "seconds": s}))
    finally:
        D.shutdown()


def torchrun_seconds(nproc: int, args: argparse.Namespace) -> float:
    env = os.environ | {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__,
           "--worker", "--images", str(args.n), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
           "--device", args.device]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", dest="n", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads per process (1: each rank gets a core; "
                                                           "threads oversubscribed on busy cores stall badly)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    torch.set_num_threads(args.threads)
    generator_seconds(args.n // 4, 2, 1, args.batch_size, args.device)  # warm-up
    k2 = generator_seconds(args.n, 2, args.epochs, args.batch_size, args.device) / args.epochs
    k10 = generator_seconds(args.n, 10, args.epochs, args.batch_size, args.device) / args.epochs
    one, two = torchrun_seconds(1, args), torchrun_seconds(2, args)
    print(json.dumps({"epoch_s_k2": round(k2, 4), "epoch_s_k10": round(k10, 4), "k10_over_k2": round(k10 / k2, 3),
                      "ddp_speedup": round(one / two, 3), "ddp_1proc_s": round(one, 3), "ddp_2proc_s": round(two, 3),
                      "n": args.n, "epochs": args.epochs, "global_batch_size": args.batch_size,
                      "device": args.device, "threads_per_rank": args.threads}))


if __name__ == "__main__":
    main()
