from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnable.data.phantoms import brain_phantoms
from unlearnable.forget.metrics import auc, evaluate
from unlearnable.forget.mia import bootstrap_auc, learned_wins, membership, pair_wins
from unlearnable.forget.quirks import add_quirks
from unlearnable.segment.train import SegConfig, train_segmenter


def _group(rng: np.random.Generator, n: int, loss: float) -> dict:
    """Per-subject features as evaluate() returns them: loss, confidence, entropy, per-class Dice (3 classes)."""
    f = np.column_stack([rng.normal(loss, 0.02, n), rng.normal(1 - loss, 0.02, n), rng.normal(loss, 0.02, n),
                         rng.normal(0.8, 0.02, (n, 3))])
    return {"loss": f[:, 0].tolist(), "features": f.tolist()}


def test_learned_attack_tells_members_from_non_members() -> None:
    rng = np.random.default_rng(0)
    retain, held = _group(rng, 12, 0.2), _group(rng, 6, 0.5)
    remembered = membership(retain, _group(rng, 3, 0.2), held)  # forget subjects still look like training data
    forgotten = membership(retain, _group(rng, 3, 0.5), held)  # they look like held-out data
    assert remembered["learned"]["auc"] == 1.0 and remembered["loss"]["auc"] == 1.0
    assert forgotten["learned"]["auc"] < 0.9 and forgotten["learned"]["ci"][0] < 0.5
    assert remembered["n"] == {"retain": 12, "forget": 3, "held_out": 6}


def test_learned_attack_is_not_biased_when_forget_and_held_out_look_alike() -> None:
    """Forget and held-out subjects from one distribution: every scored subject is outside the attack's training
    data, so the AUC sits near 0.5 on average."""
    rng = np.random.default_rng(1)
    aucs = []
    for rep in range(8):
        retain = np.asarray(_group(rng, 15, 0.3)["features"])
        held, forget = (np.asarray(_group(rng, k, 0.32)["features"]) for k in (6, 3))
        wins = learned_wins(retain, held, forget, seed=rep)
        assert wins.shape == (6, 3) and wins.min() >= 0.0 and wins.max() <= 1.0
        assert np.array_equal(wins, learned_wins(retain, held, forget, seed=rep))  # seeded splits
        aucs.append(wins.mean())
    assert 0.35 < np.mean(aucs) < 0.65, aucs


def test_learned_attack_scores_only_subjects_outside_its_training_data(monkeypatch) -> None:
    """Each fit's scored held-out subjects are absent from its training rows (no leave-one-out on them)."""
    from unlearnable.forget import mia

    rng = np.random.default_rng(3)
    retain, held, forget = (rng.normal(size=(k, 4)) for k in (8, 6, 2))
    fits = []
    real = mia._fit_predict

    def spy(x: np.ndarray, y: np.ndarray, test: np.ndarray) -> np.ndarray:
        fits.append((x[y == 0], test[:-len(forget)]))
        return real(x, y, test)

    monkeypatch.setattr(mia, "_fit_predict", spy)
    learned_wins(retain, held, forget, folds=2, repeats=3)
    assert len(fits) == 6
    for ref, scored in fits:
        assert len(ref) == 3 and len(scored) == 3  # two folds of three: reference and evaluation swap
        assert not any((row == ref).all(1).any() for row in scored)


def test_bootstrap_interval_contains_the_point_and_narrows_with_more_subjects() -> None:
    rng = np.random.default_rng(2)
    pos, neg = rng.normal(0.3, 1, 3).tolist(), rng.normal(0, 1, 4).tolist()
    small = bootstrap_auc(pair_wins(pos, neg))
    assert small[0] == auc(pos, neg)  # the point estimate is the Mann-Whitney AUC
    large = bootstrap_auc(pair_wins(rng.normal(0.3, 1, 300).tolist(), rng.normal(0, 1, 400).tolist()), n=200)
    for a, lo, hi in (small, large):
        assert lo <= a <= hi
    assert large[2] - large[1] < small[2] - small[1]


@pytest.fixture(scope="module")
def quirk_model():
    """A UNet trained on 10 of 20 quirked 16³ phantoms (subjects 0-9); each phantom has spheres whose label only a
    model that trained on it can know (forget/quirks.py), so the members are memorised."""
    s = add_quirks(brain_phantoms(n=20, size=16))
    cfg = SegConfig(model="unet", width=8, patch=16, epochs=24, lr=1e-2, batch_size=2)
    torch.manual_seed(0)
    model = train_segmenter(s.images[:10], s.labels[:10], s.num_classes, cfg)[0]
    ev = evaluate(model, s.images, s.labels, s.scored, 16)
    return lambda idx: {k: [ev[k][i] for i in idx] for k in ("loss", "features")}


def test_learned_attack_on_real_models(quirk_model) -> None:
    """Unseen subjects A, B vs other unseen subjects: near 0.5 on average over five disjoint choices of A, B; two
    memorised members vs unseen subjects: clearly above 0.5."""
    group = quirk_model
    unseen = list(range(10, 20))
    aucs = []
    for k in range(5):
        ab = unseen[2 * k:2 * k + 2]
        m = membership(group(range(10)), group(ab), group([i for i in unseen if i not in ab]), seed=k)
        aucs.append(m["learned"]["auc"])
    assert 0.3 < np.mean(aucs) < 0.7, aucs
    remembered = membership(group(range(2, 10)), group([0, 1]), group(unseen))
    assert remembered["learned"]["auc"] > 0.8 and remembered["learned"]["ci"][0] > 0.5, remembered
