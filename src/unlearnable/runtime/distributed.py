"""Everything distributed lives here, and only here imports ``torch.distributed``.

``init_from_env`` reads the launcher's variables (torchrun / torch elastic, SLURM ``srun``, Open MPI ``mpirun``,
IBM LSF ``jsrun``), falls back to a single process, and picks gloo on CPU and NCCL on GPU. The rest of the package
calls the helpers below and never branches on whether it is distributed.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from ..errors import UserError

# (rank, world size, local rank) variables of each launcher, in order of precedence.
_LAUNCHERS = (
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("lsf", "JSM_NAMESPACE_RANK", "JSM_NAMESPACE_SIZE", "JSM_NAMESPACE_LOCAL_RANK"),
    ("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"
    device: str = "cpu"
    launcher: str = "single"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_INFO = DistInfo()


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a SLURM/LSF host list such as ``gpu[01-03,07],login1`` into host names."""
    hosts: list[str] = []
    for m in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?", hostlist):
        prefix, ranges = m.group(1), m.group(2)
        if not ranges:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            if "-" in part:
                lo, hi = part.split("-", 1)
                hosts.extend(f"{prefix}{i:0{len(lo)}d}" for i in range(int(lo), int(hi) + 1))
            else:
                hosts.append(f"{prefix}{part}")
    return hosts


def launcher_env(env: dict[str, str] | None = None) -> tuple[str, int, int, int, str | None, str | None]:
    """Read (launcher, rank, world, local_rank, master_addr, master_port) from launcher variables."""
    env = dict(os.environ if env is None else env)
    for name, r, w, lr in _LAUNCHERS:
        if r in env and w in env:
            rank, world = int(env[r]), int(env[w])
            local = int(env.get(lr, rank))
            addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
            if addr is None and name == "slurm" and env.get("SLURM_JOB_NODELIST"):
                addr = expand_hostlist(env["SLURM_JOB_NODELIST"])[0]
            if addr is None and name == "lsf":
                # LSB_MCPU_HOSTS = "batch1 1 node1 42 node2 42": the first compute host is the rendezvous host.
                fields = env.get("LSB_MCPU_HOSTS", "").split()[::2]
                compute = [h for h in fields if not h.startswith("batch")] or fields
                addr = compute[0] if compute else None
            if port is None and name in ("slurm", "lsf"):
                job = env.get("SLURM_JOB_ID") or env.get("LSB_JOBID") or "0"
                port = str(29500 + int(re.sub(r"\D", "", job) or 0) % 1000)
            return name, rank, world, local, addr, port
    return "single", 0, 1, 0, None, None


def resolve_device(device: str | None, local_rank: int = 0) -> str:
    """``auto``/None picks ``cuda:<local_rank>`` when a GPU is present, else ``cpu``."""
    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return f"cuda:{local_rank % torch.cuda.device_count()}"
        return "cpu"
    if device == "cuda" and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible on this machine (use --device cpu)")
    return str(device)


def init_from_env(device: str | None = None, timeout_s: int = 1800) -> DistInfo:
    """Initialise the process group if a launcher started us; idempotent. Returns this process's DistInfo."""
    global _INFO
    if dist.is_available() and dist.is_initialized():
        return _INFO
    launcher, rank, world, local, addr, port = launcher_env()
    dev = resolve_device(device, local)
    if world <= 1:
        _INFO = DistInfo(device=dev, launcher=launcher)
        return _INFO
    backend = "nccl" if dev.startswith("cuda") else "gloo"
    os.environ.setdefault("MASTER_ADDR", addr or "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", port or "29500")
    if dev.startswith("cuda"):
        torch.cuda.set_device(torch.device(dev))
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    _INFO = DistInfo(rank, world, local, backend, dev, launcher)
    return _INFO


def info() -> DistInfo:
    return _INFO


def is_main() -> bool:
    return _INFO.rank == 0


def rank() -> int:
    return _INFO.rank


def world_size() -> int:
    return _INFO.world_size


def barrier() -> None:
    if _INFO.distributed:
        dist.barrier()


def shutdown() -> None:
    global _INFO
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _INFO = DistInfo(device=_INFO.device)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (a copy; float64 on the comm device for exact counts)."""
    t = values.detach().to(torch.float64).clone()
    if _INFO.distributed:
        comm = t.to(_INFO.device) if _INFO.backend == "nccl" else t.cpu()
        dist.all_reduce(comm, op=dist.ReduceOp.SUM)
        t = comm.cpu()
    return t


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(values) / _INFO.world_size


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank."""
    if not _INFO.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_object(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's picklable ``obj``, in rank order, on rank ``dst`` (``None`` on the others)."""
    if not _INFO.distributed:
        return [obj]
    box: list[Any] | None = [None] * _INFO.world_size if _INFO.rank == dst else None
    dist.gather_object(obj, box, dst=dst)
    return box


def broadcast_buffers(model: torch.nn.Module, src: int = 0) -> None:
    """Give every rank ``src``'s buffers (batch-norm running statistics), in place.

    DDP copies rank 0's buffers to the others at the start of each training forward only, so after the last step
    each rank holds the statistics of its own last batch. A model used after training (a frozen surrogate) must be
    the same on every rank, and the same as the checkpoint a resumed run loads (rank 0's).
    """
    if not _INFO.distributed:
        return
    for b in model.buffers():
        comm = b.data if _INFO.backend == "nccl" else b.data.cpu()
        dist.broadcast(comm, src=src)
        if comm.data_ptr() != b.data.data_ptr():
            b.data.copy_(comm)


def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate equally-shaped tensors from all ranks along dim 0, in rank order."""
    if not _INFO.distributed:
        return t
    comm = t.to(_INFO.device) if _INFO.backend == "nccl" else t.cpu()
    out = [torch.empty_like(comm) for _ in range(_INFO.world_size)]
    dist.all_gather(out, comm.contiguous())
    return torch.cat([o.cpu() for o in out], 0)


def gather_rows(t: torch.Tensor, owned: list[torch.Tensor]) -> torch.Tensor:
    """Every rank's rows of ``t`` ``(N, ...)`` in one tensor: rank ``r`` computed rows ``owned[r]`` (indices).

    All ranks know ``owned`` (it is derived from a shared seed), so only the values travel; rows are copied, never
    added, so the result is bit-for-bit what the owning ranks hold.
    """
    if not _INFO.distributed:
        return t
    rows = max(len(o) for o in owned)
    mine = owned[_INFO.rank].to(t.device)
    padded = torch.zeros((rows, *t.shape[1:]), dtype=t.dtype)
    padded[:len(mine)] = t[mine].cpu()
    parts = all_gather_tensor(padded).view(_INFO.world_size, rows, *t.shape[1:])
    out = t.clone()
    for r, o in enumerate(owned):
        out[o.to(t.device)] = parts[r, :len(o)].to(t.device)
    return out


def gather_shards(local: torch.Tensor, n: int) -> torch.Tensor:
    """Reassemble per-rank results computed on :func:`shard_indices` ``(n_r, ...)`` into ``(n, ...)`` in order.

    Shards differ in length by at most one, so each is padded to ``ceil(n / world)`` rows for the all-gather.
    """
    w = _INFO.world_size
    if w == 1:
        return local
    rows = -(-n // w)
    padded = torch.zeros((rows, *local.shape[1:]), dtype=local.dtype)
    padded[:len(local)] = local.cpu()
    parts = all_gather_tensor(padded).view(w, rows, *local.shape[1:])
    out = torch.empty((n, *local.shape[1:]), dtype=local.dtype)
    for r in range(w):
        k = len(range(r, n, w))
        out[r::w] = parts[r, :k]
    return out


def sync_bn_state(requested: bool) -> str:
    """What ``--sync-bn`` does in this job, as recorded in results: ``on``, ``off`` or ``no-op (1 process)``.

    SyncBatchNorm normalises with the statistics of the *global* batch instead of each rank's share; PyTorch runs
    it on GPUs only, so a data-parallel CPU job that asks for it is refused rather than silently left per-rank.
    """
    if not requested:
        return "off"
    if not _INFO.distributed:
        return "no-op (1 process)"
    if not _INFO.device.startswith("cuda"):
        raise UserError(f"--sync-bn: SyncBatchNorm runs on GPUs only in PyTorch, and this job's device is "
                        f"{_INFO.device}; drop --sync-bn or use --device cuda")
    return "on"


def wrap(model: torch.nn.Module, sync_bn: bool = False) -> torch.nn.Module:
    """DDP-wrap ``model`` (already on the right device) when running distributed; no-op otherwise.

    With ``sync_bn`` its batch-norm layers become SyncBatchNorm first (in place: the parameters are the same
    objects, so an optimizer built on ``model.parameters()`` keeps working).
    """
    if not _INFO.distributed:
        return model
    if sync_bn_state(sync_bn) == "on":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [torch.device(_INFO.device).index] if _INFO.device.startswith("cuda") else None
    # Single-input-channel convolutions have weights whose size-1 dim makes the stride check fire; the
    # gradients are still correct (the tensors are equal), so the warning is noise for grey images.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def per_rank_batch(global_batch_size: int) -> int:
    """Split the global batch evenly; a global batch that does not divide is refused, not silently changed."""
    w = _INFO.world_size
    if global_batch_size < w or global_batch_size % w:
        raise UserError(f"--batch-size {global_batch_size}: the global batch must be a multiple of the "
                        f"world size ({w})")
    return global_batch_size // w


def train_sampler(n: int, seed: int, shuffle: bool = True, drop_last: bool = False) -> DistributedSampler:
    """A DistributedSampler over ``range(n)``; call ``set_epoch`` every epoch (also in one process)."""
    return DistributedSampler(range(n), num_replicas=_INFO.world_size, rank=_INFO.rank, shuffle=shuffle,
                              seed=seed, drop_last=drop_last)


def shard_indices(n: int) -> range:
    """This rank's share of ``range(n)`` for evaluation: strided, un-padded, every index exactly once."""
    return range(_INFO.rank, n, _INFO.world_size)


def batches(indices: list[int] | range, batch_size: int) -> Iterator[list[int]]:
    idx = list(indices)
    for i in range(0, len(idx), batch_size):
        yield idx[i:i + batch_size]
