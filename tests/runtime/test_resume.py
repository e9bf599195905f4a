"""Interrupt and resume gives the same bytes as never stopping: the victim loop and segmentation training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearnable.data.phantoms import brain_phantoms
from unlearnable.errors import UserError
from unlearnable.runtime import checkpoint as CK
from unlearnable.segment import train as seg
from unlearnable.train.loop import Recipe, train_classifier


def _noise_hook(x: torch.Tensor, y: torch.Tensor, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws from the global torch RNG, so an exact resume needs the RNG state saved with the weights."""
    return (x + 0.05 * torch.randn_like(x)).clamp(0, 1), y


def _same_bytes(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_victim_loop_resumes_to_identical_bytes(grey_set, tmp_path: Path) -> None:
    r = Recipe(model="smallcnn", epochs=3, batch_size=4, lr=0.05)
    full, ref = train_classifier(grey_set.images, grey_set.labels, 4, r, hooks=[_noise_hook])
    seen = {"batches": 0}

    def interrupt_in_epoch_2(x, y, model):
        seen["batches"] += 1
        if seen["batches"] == 6:  # 4 batches per epoch: stop inside the second epoch
            raise KeyboardInterrupt
        return _noise_hook(x, y, model)

    ck = tmp_path / "run.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train_classifier(grey_set.images, grey_set.labels, 4, r, hooks=[interrupt_in_epoch_2], checkpoint=ck)
    assert CK.load(ck)["epoch"] == 1
    torch.manual_seed(12345)  # a fresh process starts from other RNG states
    resumed, hist = train_classifier(grey_set.images, grey_set.labels, 4, r, hooks=[_noise_hook], checkpoint=ck)
    assert [row["epoch"] for row in hist.epochs] == [1, 2, 3]
    assert [row["train_loss"] for row in hist.epochs] == [row["train_loss"] for row in ref.epochs]
    _same_bytes(full, resumed)


def test_victim_loop_refuses_a_truncated_checkpoint(grey_set, tmp_path: Path) -> None:
    r = Recipe(model="smallcnn", epochs=1, batch_size=8, lr=0.05)
    ck = tmp_path / "run.ckpt"
    train_classifier(grey_set.images, grey_set.labels, 4, r, checkpoint=ck)
    ck.write_bytes(ck.read_bytes()[:-100])
    with pytest.raises(UserError, match="run.ckpt: damaged checkpoint"):
        train_classifier(grey_set.images, grey_set.labels, 4, r, checkpoint=ck)


def test_segment_training_resumes_to_identical_bytes(tmp_path: Path, monkeypatch) -> None:
    s = brain_phantoms(n=3, size=16)
    cfg = seg.SegConfig(model="resnet10", width=4, patch=16, epochs=2, batch_size=2, patches_per_subject=1)
    full, ref = seg.train_segmenter(s.images, s.labels, s.num_classes, cfg)
    real, calls = seg.train_epochs, {"n": 0}

    def interrupt_in_epoch_2(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(seg, "train_epochs", interrupt_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        seg.train_segmenter(s.images, s.labels, s.num_classes, cfg, ckpt_dir=tmp_path)
    monkeypatch.undo()
    assert CK.load(tmp_path / "last.pt")["epoch"] == 1
    torch.manual_seed(12345)
    resumed, summary = seg.train_segmenter(s.images, s.labels, s.num_classes, cfg, ckpt_dir=tmp_path)
    assert summary["loss"] == ref["loss"]
    _same_bytes(full, resumed)
    (tmp_path / "last.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:-1])
    with pytest.raises(UserError, match="last.pt: damaged checkpoint"):
        seg.train_segmenter(s.images, s.labels, s.num_classes, cfg, ckpt_dir=tmp_path)


def test_simclr_surrogate_resumes_to_identical_bytes(grey_set, tmp_path: Path) -> None:
    from unlearnable.models import build_model
    from unlearnable.protect.ssl import train_ssl_surrogate

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model("smallcnn", 1, 16, 16)

    full = fresh()
    ref = train_ssl_surrogate(full, grey_set.images, 3, 8, 1e-3, 11, "cpu")

    def stop(epoch: int) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    ck = tmp_path / "surrogate.pt"
    with pytest.raises(KeyboardInterrupt):
        train_ssl_surrogate(fresh(), grey_set.images, 3, 8, 1e-3, 11, "cpu", ck, on_epoch_end=stop)
    saved = CK.load(ck)
    assert saved["epoch"] == 2 and len(saved["generators"]["augment"]) == 1  # the augmentation draws travel too
    torch.manual_seed(12345)
    resumed = fresh()
    assert train_ssl_surrogate(resumed, grey_set.images, 3, 8, 1e-3, 11, "cpu", ck) == ref
    _same_bytes(full, resumed)
    with pytest.raises(UserError, match="surrogate.pt: checkpoint was made with different training settings"):
        train_ssl_surrogate(fresh(), grey_set.images, 3, 8, 1e-2, 11, "cpu", ck)


def test_epoch_loop_refuses_a_checkpoint_without_its_fields(tmp_path: Path) -> None:
    from unlearnable.runtime.loop import EpochLoop

    model = torch.nn.Linear(2, 2)
    ck = tmp_path / "generator.pt"
    CK.save(ck, {"generator": model.state_dict(), "epoch": 1})  # another trainer's field names
    loop = EpochLoop(ck, model, torch.optim.SGD(model.parameters(), lr=0.1), {}, "params", 0)
    with pytest.raises(UserError, match=r"generator.pt: checkpoint lacks model, optimizer, rng"):
        loop.resume()


def test_epoch_loop_gives_each_rank_its_own_generator_back(tmp_path: Path, monkeypatch) -> None:
    """Two ranks' generator states travel in one checkpoint; rank 1 resumes with its own (it used to get a view
    into the gathered tensor, which ``Generator.set_state`` reads from the storage's start: a crash)."""
    from unlearnable.runtime import distributed as D
    from unlearnable.runtime.loop import EpochLoop

    ranks = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    monkeypatch.setattr(D, "all_gather_tensor", lambda t: torch.cat([g.get_state()[None] for g in ranks]))
    model = torch.nn.Linear(2, 2)
    ck = tmp_path / "loop.pt"

    def loop(g: torch.Generator) -> EpochLoop:
        return EpochLoop(ck, model, torch.optim.SGD(model.parameters(), lr=0.1), {}, "s", 0, generators={"aug": g})

    for _ in loop(ranks[0]).epochs(0, 1):
        pass
    want = [torch.rand(3, generator=g) for g in ranks]
    for rank in (1, 0):
        monkeypatch.setattr(D, "rank", lambda r=rank: r)
        mine = torch.Generator().manual_seed(99)
        assert loop(mine).resume()["epoch"] == 1
        assert torch.equal(torch.rand(3, generator=mine), want[rank])
