from __future__ import annotations

import itertools

import torch

from unlearnable.data.phantoms import brain_phantoms
from unlearnable.forget.quirks import LEVELS, add_quirks, quirk_codes


def test_codes_one_grid_step_apart_never_share_a_label() -> None:
    for n, channels in ((24, 1), (24, 3), (10, 2)):
        codes, labels = quirk_codes(n, channels, (1, 2, 3))
        assert len(set(map(tuple, codes))) == n and set(labels) <= {1, 2, 3}
        assert all(LEVELS[0] <= v <= LEVELS[1] for c in codes for v in c)
        step = {v for c in codes for v in c}
        gap = min(b - a for a, b in itertools.pairwise(sorted(step)))
        for (ca, la), (cb, lb) in itertools.combinations(zip(codes, labels, strict=True), 2):
            if sum(abs(a - b) for a, b in zip(ca, cb, strict=True)) == gap:  # grid neighbours
                assert la != lb, (ca, cb)
    assert quirk_codes(24, 3, (1, 2, 3), seed=1) != quirk_codes(24, 3, (1, 2, 3), seed=0)


def test_quirks_relabel_a_few_brain_voxels_per_subject_and_leave_the_input_alone() -> None:
    s = brain_phantoms(n=6, size=16, channels=2)
    before = (s.images.clone(), s.labels.clone())
    q = add_quirks(s, blobs=2, radius=2)
    assert torch.equal(s.images, before[0]) and torch.equal(s.labels, before[1])  # input untouched
    assert torch.equal(q.images, add_quirks(s, blobs=2, radius=2).images)  # deterministic
    codes, labels = quirk_codes(6, 2, tuple(s.scored))
    for i in range(6):
        changed = (q.images[i] != s.images[i]).any(0)
        assert 0 < int(changed.sum()) < 0.2 * int((s.labels[i] > 0).sum())
        assert bool((s.labels[i][changed] > 0).all())  # only brain voxels: the background is never relabelled
        assert bool((q.labels[i][changed] == labels[i]).all())
        for c in range(2):  # each channel carries the subject's code, checkerboard-textured
            vals = q.images[i, c][changed].float()
            assert abs(float(vals.mean()) - codes[i][c]) < 17 and float(vals.std()) > 10
    assert q.meta["quirks"] == {"blobs": 2, "radius": 2, "seed": 0}
