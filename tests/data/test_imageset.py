from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnable.data import ImageSet
from unlearnable.errors import UserError


@pytest.mark.parametrize("shape", [(5, 8, 8), (5, 8, 8, 3)])
def test_from_numpy_to_numpy_keeps_layout(shape):
    arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    ds = ImageSet.from_numpy(arr, np.array([[0], [1], [2], [0], [1]]))
    assert ds.images.shape == (5, 1 if len(shape) == 3 else 3, 8, 8)
    assert np.array_equal(ds.to_numpy(), arr)
    assert ds.labels.tolist() == [0, 1, 2, 0, 1]


def test_bad_inputs_name_the_field():
    arr = np.zeros((4, 8, 8), np.uint8)
    with pytest.raises(UserError, match="labels: 3 labels for 4 images"):
        ImageSet.from_numpy(arr, [0, 1, 2])
    with pytest.raises(UserError, match="dtype uint8"):
        ImageSet.from_numpy(arr.astype(np.float32), [0, 1, 2, 3])
    with pytest.raises(UserError, match="out of range"):
        ImageSet.from_numpy(arr, [0, 1, 2, 3], classes=["a", "b"])


def test_subset_split_and_with_images_never_touch_the_original(grey_set):
    before = grey_set.images.clone()
    idx = torch.tensor([0, 3])
    sub = grey_set.subset(idx)
    assert sub.ids == (grey_set.ids[0], grey_set.ids[3])
    new = grey_set.with_images(torch.zeros_like(sub.images), idx)
    assert torch.equal(grey_set.images, before)
    assert new.images[0].sum() == 0 and torch.equal(new.images[1], before[1])
    with pytest.raises(UserError, match="split 'test' has no samples"):
        grey_set.split("test")
