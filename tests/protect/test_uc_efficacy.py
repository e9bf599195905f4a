"""UC efficacy on the built-in digits: a victim trained on UC-protected digits must do clearly worse on clean ones.

Threat model of UC (Zhang et al., CVPR 2023): the protector has no labels but can use an off-the-shelf feature
extractor. Here that extractor is a smallcnn trained on 3,000 OTHER training digits (disjoint from the 1,000 that
are protected); UC clusters the 1,000 digits label-agnostically and perturbs them. Slow: ~1-3 minutes on 2 cores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearnable.audit.evaluate import evaluate
from unlearnable.data import load
from unlearnable.protect import protect
from unlearnable.train.loop import Recipe, train_classifier


@pytest.mark.slow
def test_uc_lowers_clean_accuracy_on_mnist5k(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    ds = load("mnist5k")
    train = ds.indices("train")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    mine, public = train[perm[:1000]], train[perm[1000:]]
    sub = ds.subset(torch.cat([mine, ds.indices("test")[::2]]))
    surrogate, _ = train_classifier(ds.images[public], ds.labels[public], 10,
                                    Recipe(model="smallcnn", epochs=3, batch_size=64, lr=0.05))
    torch.save(surrogate.state_dict(), tmp_path / "surrogate.pt")
    prot = protect(sub, "uc", key=0, clusters=10, epochs=5, batch_size=64, eps=64 / 255,
                   surrogate_weights=str(tmp_path / "surrogate.pt"))
    res = evaluate(prot, sub, Recipe(model="smallcnn", epochs=6, batch_size=32, lr=0.05))
    assert res["clean_acc"] > 0.85
    assert res["protected_acc"] < res["clean_acc"] - 0.12, res
