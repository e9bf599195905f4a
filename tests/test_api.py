from __future__ import annotations

import numpy as np

import unlearnable as ul


def test_readme_python_example():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    copy = images.copy()
    ds = ul.ImageSet.from_numpy(images, labels)
    prot = ul.protect(ds, "cuda", key=b"0123456789abcdef0123", blur=0.3)
    arr = prot.to_numpy()
    assert arr.shape == images.shape and arr.dtype == np.uint8
    assert np.array_equal(images, copy) and np.array_equal(ds.to_numpy(), copy)  # input untouched
    assert not np.array_equal(arr, images)
    again = ul.protect(ds, "cuda", key=b"0123456789abcdef0123", blur=0.3).to_numpy()
    assert np.array_equal(arr, again)


def test_protect_is_both_the_function_and_the_package():
    import unlearnable.protect as package
    import unlearnable.protect.run as run

    assert package is ul.protect and callable(ul.protect)
    assert "cuda" in package.METHODS and callable(run.protect_source)
