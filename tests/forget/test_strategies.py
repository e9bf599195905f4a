from __future__ import annotations

import pytest
import torch

from unlearnable.data.subjects import SubjectSet
from unlearnable.errors import UserError
from unlearnable.forget import STRATEGIES, ForgetTask, run_strategy
from unlearnable.forget.base import Strategy, strategy_names
from unlearnable.forget.max_loss import MaxLoss
from unlearnable.forget.noisy_label import corrupt_labels
from unlearnable.models.seg3d import build_seg_model
from unlearnable.segment.train import SegConfig


def _task(s: SubjectSet) -> ForgetTask:
    cfg = SegConfig(model="resnet10", width=4, patch=16, batch_size=2, lr=1e-2, patches_per_subject=1)
    return ForgetTask(s.images[:3], s.labels[:3], s.images[3:5], s.labels[3:5], s.num_classes, cfg,
                      held_images=s.images[5:], held_labels=s.labels[5:], budget=1.0, stop="none")


def _state(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _run(name: str, trained: torch.nn.Module, task: ForgetTask, horizons=(1, 2)):
    seen: dict[int, tuple[dict, float]] = {}

    def on_horizon(h: int, model: torch.nn.Module, t: float) -> None:
        seen[h] = (_state(model), t)

    run_strategy(STRATEGIES.get(name)(), trained, lambda: build_seg_model("resnet10", 1, 4, 4), task,
                 list(horizons), on_horizon)
    return seen


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_seg_model("resnet10", 1, 4, 4)


def test_all_strategies_are_registered() -> None:
    assert {"retrain", "finetune", "noisy-label"} <= set(STRATEGIES.names())
    assert strategy_names("all")[0] == "retrain" and sorted(strategy_names("all")) == sorted(STRATEGIES.names())
    assert strategy_names("noisy-label,finetune,noisy-label") == ["noisy-label", "finetune"]
    with pytest.raises(UserError, match="did you mean 'noisy-label'"):
        strategy_names("noisy-labels")


# Every strategy that runs on the shared step loop; one that brings its own ``run`` (SISA retrains shards of a
# ``segment train --shards`` model) needs a set-up of its own and is tested where it has one (test_sisa_cli.py).
ON_THE_STEP_LOOP = [n for n in STRATEGIES.names() if STRATEGIES.get(n).run is Strategy.run]


@pytest.mark.parametrize("name", ON_THE_STEP_LOOP)
def test_every_strategy_runs_and_changes_the_model(name: str, trained, tiny_subjects: SubjectSet) -> None:
    before = _state(trained)
    seen = _run(name, trained, _task(tiny_subjects))
    assert sorted(seen) == [1, 2] and seen[2][1] >= seen[1][1] > 0  # cumulative time per horizon
    after = seen[2][0]
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert changed, f"{name} left the model unchanged"
    assert any(not torch.equal(seen[1][0][k], after[k]) for k in changed)  # horizons are different models
    assert all(torch.equal(before[k], v) for k, v in _state(trained).items())  # the trained model is untouched


def test_fix_decoder_keeps_the_decoder(trained, tiny_subjects: SubjectSet) -> None:
    before = _state(trained)
    after = _run("fix-decoder", trained, _task(tiny_subjects), (1,))[1][0]
    dec = [k for k in before if k.startswith("conv_seg.")]
    enc = [k for k in before if k.startswith("layer") and before[k].is_floating_point()]
    assert dec and [k for k in dec if not torch.equal(before[k], after[k])] == []
    assert any(not torch.equal(before[k], after[k]) for k in enc)


def test_random_encoder_redraws_the_encoder(trained, tiny_subjects: SubjectSet) -> None:
    task = _task(tiny_subjects)
    task.cfg = SegConfig(model="resnet10", width=4, patch=16, batch_size=2, lr=1e-9, patches_per_subject=1)
    before = _state(trained)
    after = _run("random-encoder", trained, task, (1,))[1][0]
    w = "layer1.0.conv1.weight"
    assert (after[w] - before[w]).abs().max() > 1e-3  # new weights, not a tiny update
    assert (after["conv_seg.6.weight"] - before["conv_seg.6.weight"]).abs().max() < 1e-6  # decoder kept


def test_retrain_starts_from_scratch(trained, tiny_subjects: SubjectSet) -> None:
    task = _task(tiny_subjects)
    task.cfg = SegConfig(model="resnet10", width=4, patch=16, batch_size=2, lr=1e-9, patches_per_subject=1)
    after = _run("retrain", trained, task, (1,))[1][0]
    torch.manual_seed(123)
    assert not torch.allclose(after["conv1.weight"], trained.conv1.weight, atol=1e-3)


def test_noisy_labels_are_random_and_deterministic(tiny_subjects: SubjectSet) -> None:
    a = corrupt_labels(tiny_subjects.labels[:2], 4, 5)
    assert torch.equal(a, corrupt_labels(tiny_subjects.labels[:2], 4, 5)) and a.shape == (2, 16, 16, 16)
    agree = (a == tiny_subjects.labels[:2]).float().mean()
    assert 0.15 < agree < 0.35  # chance agreement with 4 classes


def test_max_loss_ascends_on_forget_and_is_capped() -> None:
    logits = torch.zeros(2, 4, 2, 2, 2, requires_grad=True)
    labels = torch.zeros(2, 2, 2, 2, dtype=torch.long)
    loss = MaxLoss().loss(logits, labels, torch.tensor([False, True]))
    loss.backward()
    assert logits.grad[1, 0].sum() > 0  # ascent: raising the true class's logit would raise the loss
    far = torch.full((1, 4, 2, 2, 2), 0.0)
    far[:, 1] = 100.0  # confidently wrong: CE far above the cap
    assert torch.isclose(MaxLoss().loss(far, labels[:1], torch.tensor([True])), -2 * torch.log(torch.tensor(4.0)))


def test_interrupted_run_resumes_from_the_last_horizon(tmp_path, trained, tiny_subjects: SubjectSet) -> None:
    task = _task(tiny_subjects)
    first: dict[int, tuple[dict, float]] = {}
    second: dict[int, tuple[dict, float]] = {}

    def fresh() -> torch.nn.Module:
        return build_seg_model("resnet10", 1, 4, 4)

    run_strategy(STRATEGIES.get("finetune")(), trained, fresh, task, [1, 2],
                 lambda h, m, t: first.__setitem__(h, (_state(m), t)), tmp_path / "whole")
    cut: dict[int, tuple[dict, float]] = {}

    def interrupted(h: int, m: torch.nn.Module, t: float) -> None:
        if h == 2:  # killed inside the second horizon, before its checkpoint
            raise KeyboardInterrupt
        cut[h] = (_state(m), t)

    with pytest.raises(KeyboardInterrupt):
        run_strategy(STRATEGIES.get("finetune")(), trained, fresh, task, [1, 2], interrupted, tmp_path / "cut")
    run_strategy(STRATEGIES.get("finetune")(), trained, fresh, task, [1, 2],
                 lambda h, m, t: second.__setitem__(h, (_state(m), t)), tmp_path / "cut")
    assert second[1][1] == cut[1][1]  # horizon 1 was replayed from the checkpoint, not trained again
    for k, v in cut[1][0].items():
        assert torch.equal(second[1][0][k], v), k
    for k, v in first[2][0].items():  # and horizon 2 continues to exactly the same weights
        assert torch.allclose(second[2][0][k].float(), v.float(), atol=1e-6), k
