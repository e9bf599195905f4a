"""The ``protect`` command's streamed pass sharded over ranks: each rank writes its round-robin share of the files,
rank 0 merges the digests and metrics in chunk order and writes the manifest; the output equals one process's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_folder
from unlearnable.data import quality
from unlearnable.data.formats.images import ImageFormat
from unlearnable.data.io import open_catalog
from unlearnable.errors import UserError
from unlearnable.protect import stream
from unlearnable.protect.base import METHODS
from unlearnable.protect.keys import Key
from unlearnable.runtime import distributed as D

# 20 images of 16 x 16 in chunks of 3: 7 chunks, so both ranks get several and the last one is short
CHUNK_ENV = {"UNLEARNABLE_CHUNK_PIXELS": "768"}
# Manifest fields that legitimately differ between two runs: when, how long, and with how many processes.
RUN_SPECIFIC = ("created_utc", "time_s", "fit_s")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_share_covers_every_chunk_once_round_robin():
    for n in (0, 1, 2, 7, 8):
        for w in (1, 2, 3):
            shares = [stream.share(n, r, w) for r in range(w)]
            assert sorted(k for s in shares for k in s) == list(range(n))
            assert all(s == list(range(r, n, w)) for r, s in enumerate(shares))


@pytest.fixture
def tiles_job(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNABLE_CHUNK_PIXELS", CHUNK_ENV["UNLEARNABLE_CHUNK_PIXELS"])
    cat = open_catalog(str(write_folder(tmp_path / "folder", per_class=5)))
    algo = METHODS.get("tiles")()
    target = set(cat.indices("train"))
    pert = algo.fit(cat.imageset(sorted(target)), Key.from_seed(4))
    return cat, (algo, pert, target, cat.sizes[0], None, ImageFormat())


def _as_rank(monkeypatch, rank: int, gathered: list) -> None:
    """Make this process rank ``rank`` of 2 for the pass: collectives are replaced by a list the ranks share."""
    monkeypatch.setattr(D, "_INFO", D.DistInfo(rank=rank, world_size=2, backend="gloo", device="cpu"))
    monkeypatch.setattr(D, "barrier", lambda: None)
    monkeypatch.setattr(D, "gather_object", lambda obj, dst=0: (gathered.append(obj), None)[1] if rank else
                        [obj, *gathered])


def test_two_ranks_write_their_shares_and_rank0_merges_as_one_process(tiles_job, tmp_path, monkeypatch):
    cat, args = tiles_job
    monkeypatch.setattr(quality, "SSIM_MIN", 2)  # SSIM on a sample: the same sample whoever writes the chunks
    assert cat.per_sample_files and len(list(cat.chunks(cat.order()))) == 7
    one = stream.stream_protect(cat, tmp_path / "one", *args)
    gathered: list = []
    _as_rank(monkeypatch, 1, gathered)
    assert stream.sharded(cat)
    assert stream.stream_protect(cat, tmp_path / "two", *args) is None  # rank 1: its files, nothing to merge
    (done, error), = gathered
    assert error is None and [k for k, _ in done] == [1, 3, 5]
    written_by_1 = set(tree(tmp_path / "two"))
    assert 0 < len(written_by_1) < len(tree(tmp_path / "one"))
    _as_rank(monkeypatch, 0, gathered)
    two = stream.stream_protect(cat, tmp_path / "two", *args)
    assert tree(tmp_path / "two") == tree(tmp_path / "one")
    assert (two.files, two.metrics, two.source_sha256) == (one.files, one.metrics, one.source_sha256)
    assert list(two.files) == list(one.files)  # digests in the writer's order too (the manifest's key order)


def test_ssim_is_measured_on_an_evenly_spread_sample_of_each_split(tiles_job, tmp_path, monkeypatch):
    import numpy as np
    import torch

    cat, args = tiles_job
    monkeypatch.setattr(quality, "SSIM_MIN", 3)
    monkeypatch.setattr(quality, "SSIM_EVERY", 4)
    pick = stream.ssim_sample(cat)
    chosen = {s: [i for i in cat.indices(s) if pick[i]] for s in cat.split_names()}
    for s, idx in chosen.items():
        every = cat.indices(s)
        step = max(1, min(4, len(every) // 3))  # all up to 2 x 3, then at least 3 and at least one in 4
        assert idx == every[::step] and len(idx) >= min(3, len(every)) and len(idx) >= len(every) / 4, s
    res = stream.stream_protect(cat, tmp_path / "out", *args)
    train = res.metrics["train"]
    assert train["ssim_images"] == len(chosen["train"]) < len(cat.indices("train"))
    assert 0 < train["ssim_se"] < 0.1 and res.metrics["test"]["ssim_se"] == 0.0  # test: unprotected, SSIM 1
    clean = cat.imageset(chosen["train"]).images
    out = open_catalog(str(tmp_path / "out"))
    by_id = {i: k for k, i in enumerate(out.ids)}
    written = out.imageset([by_id[cat.ids[i]] for i in chosen["train"]]).images
    want = float(quality.ssim(clean, written).mean())
    assert abs(train["ssim"] - want) < 1e-6
    assert not torch.equal(clean, written) and np.isfinite(train["psnr_db"])


def test_an_error_on_another_rank_is_raised_on_rank0(tiles_job, tmp_path, monkeypatch):
    cat, args = tiles_job
    _as_rank(monkeypatch, 0, [([], ("UserError", "folder/train/cat/img1.png: cannot decode"))])
    with pytest.raises(UserError, match="img1.png: cannot decode"):
        stream.stream_protect(cat, tmp_path / "x", *args)
    _as_rank(monkeypatch, 0, [([], ("OSError", "disk full"))])
    with pytest.raises(RuntimeError, match="a rank of the sharded pass failed: OSError: disk full"):
        stream.stream_protect(cat, tmp_path / "y", *args)


def test_pass_start_tells_the_other_ranks_once(monkeypatch):
    sent: list = []
    monkeypatch.setattr(D, "broadcast_object", lambda obj, src=0: sent.append(obj) or "/shared/out")
    start = stream.PassStart(True)
    start.send(Path("/shared/out"))
    start.send(None)  # after the pass started: nothing more is sent
    assert sent == ["/shared/out"]
    assert stream.PassStart(False).receive() is None and sent == ["/shared/out"]
    assert stream.PassStart(True).receive() == Path("/shared/out")


@pytest.mark.slow  # two methods x (one process + a 2-process torchrun): about 2 min on the shared 2-core machine
@pytest.mark.distributed
@pytest.mark.parametrize("method", [["tiles"], ["em", "-p", "max_outer=2", "-p", "train_steps=2", "-p", "pgd_steps=2",
                                               "-p", "batch_size=4"]], ids=["tiles", "em"])
def test_protect_cli_under_torchrun_writes_the_tree_of_one_process(tmp_path, method):
    """Same key, same source: every output file is byte-identical, the manifest too except when it ran, how long
    it took and ``runtime.world_size``."""
    src = write_folder(tmp_path / "folder", per_class=5)
    env = dict(os.environ, OMP_NUM_THREADS="1", **CHUNK_ENV)
    args = ["protect", str(src), "-m", *method, "-o", "out", "--key", str(tmp_path / "k.key"), "--device", "cpu"]
    for name, launch in (("one", []), ("two", ["-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"])):
        (tmp_path / name).mkdir()
        r = subprocess.run([sys.executable, *launch, "-m", "unlearnable", *args], cwd=tmp_path / name, env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    one, two = tree(tmp_path / "one" / "out"), tree(tmp_path / "two" / "out")
    m1, m2 = (json.loads(t.pop("manifest.json")) for t in (one, two))
    assert one == two and len(one) > 20  # 20 images, config, report
    assert (m1["runtime"].pop("world_size"), m2["runtime"].pop("world_size")) == (1, 2)
    for f in RUN_SPECIFIC:
        m1.pop(f), m2.pop(f)
    assert m1 == m2
    assert m1["metrics"]["train"]["changed_fraction"] > 0.5  # it did protect the training images
