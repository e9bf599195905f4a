"""``sisa``: exact unlearning for a model trained with ``segment train --shards S`` (Bourtoule et al., 2021).

Only the shards that hold a forgotten subject are retrained, each from the checkpoint of the last slice *before*
the first slice that holds one (from scratch when that is slice 0), on its remaining subjects; the other shards are
kept bit for bit. The result is exactly a model that never saw the subjects: every member's training data, recorded
in its checkpoints' ``seen`` lists, excludes them (checked before the shard is resumed and after it is retrained).
Its cost is that of retraining one shard from one slice on, not the whole model.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import UserError
from ..runtime.distributed import unwrap
from ..segment.shards import ShardEnsemble, load_slice, slice_path, train_shard
from .base import STRATEGIES, ForgetTask, HorizonFn, Strategy


@STRATEGIES.register("sisa")
class Sisa(Strategy):
    """SISA: retrain only the shards that saw a forgotten subject, from their last clean slice checkpoint (exact)."""

    guarantee = "exact"

    def __init__(self) -> None:
        super().__init__()
        self.plan: list[list[list[str]]] = []
        self.retrained: set[tuple[int, int]] = set()  # (shard, slice) checkpoints this run wrote in ``work``
        self.seen: dict[int, list[str]] = {}  # retrained shard -> the subject ids it trained on
        self.source: Path | None = None
        self.work: Path | None = None

    def run(self, trained: nn.Module, fresh: Callable[[], nn.Module], task: ForgetTask, horizons: list[int],
            on_horizon: HorizonFn, ckpt_dir: Path | None) -> bool:
        info = task.meta.get("sisa")
        ensemble = unwrap(trained)
        if not info or not isinstance(ensemble, ShardEnsemble) or task.model_dir is None:
            raise UserError(f"--strategy sisa: {task.model_dir} was not trained with 'segment train --shards S'; "
                            "exact unlearning needs the shard checkpoints")
        self.source = Path(task.model_dir)
        self.work = Path(ckpt_dir) / "sisa-shards" if ckpt_dir else Path(tempfile.mkdtemp(prefix="sisa-"))
        gone = set(task.forget_ids)
        images = dict(zip(task.retain_ids, task.retain_images))
        labels = dict(zip(task.retain_ids, task.retain_labels))
        arch = task.meta["arch"]
        model = copy.deepcopy(ensemble).to(task.device)
        t0, c0, steps, retrained = time.perf_counter(), time.process_time(), 0, {}
        for k, slices in enumerate(info["plan"]):
            hit = [r for r, ids in enumerate(slices) if gone & set(ids)]
            self.plan.append([[i for i in ids if i not in gone] for ids in slices])
            if not hit:
                continue
            first = hit[0]
            start = load_slice(self.source, k, first - 1, task.device) if first > 0 else None
            if start is not None and gone & set(start["seen"]):
                raise UserError(f"{slice_path(self.source, k, first - 1)}: its recorded training data holds a "
                                "subject to forget, so the plan in model.json does not match the checkpoints")
            member, n = train_shard(k, self.plan[k], first, images, labels, arch, task.cfg,
                                    info["epochs_per_slice"], task.device, self.work, start)
            model.members[k] = member
            steps += n
            seen = load_slice(self.work, k, len(slices) - 1, "cpu")["seen"]  # what the retrained member trained on
            retrained[str(k)] = {"from_slice": first, "subjects_seen": len(seen)}
            self.seen[k] = list(seen)
            self.retrained.update((k, r) for r in range(first, len(slices)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        model.eval()
        for h in horizons:  # exact: the same model at every horizon
            self.progress[h] = {"steps": steps, "stopped_at": None, "budget_steps": steps, "stop": "none",
                                "cpu_s": cpu, "stop_log": [], "retrained_shards": retrained}
            on_horizon(h, model, elapsed)
        return True

    def meta_update(self, meta: dict[str, Any]) -> dict[str, Any]:
        """model.json fields of the unlearned model: the plan without the forgotten subjects."""
        return {"sisa": {**meta["sisa"], "plan": self.plan}}

    def save_extra(self, folder: Path) -> None:
        """Write the unlearned model's slice checkpoints (kept shards' copied, retrained shards' new), so that a
        later request can be served exactly from it too."""
        assert self.source is not None and self.work is not None
        for k, slices in enumerate(self.plan):
            for r in range(len(slices)):
                src = self.work if (k, r) in self.retrained else self.source
                dst = slice_path(folder, k, r)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(slice_path(src, k, r), dst)
