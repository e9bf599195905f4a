"""The budget in each image's own intensity range, and re-quantisation to the file's stored type.

Rule (recorded in every manifest as :data:`RULE`): a voxel of a protected image differs from the clean one by at
most ``eps * W`` in the file's own (scaled) units, where ``W = hi - lo`` is the intensity window that the reader
maps onto [0, 1] for the models (:func:`~unlearnable.data.subjectset.intensity_window`): the 1st to 99.5th
percentile of the volume's non-zero voxels for scanner data, 0..255 for volumes stored as unscaled uint8. So
``eps`` means the same to a model whatever the scanner's units. The change is made on the stored integers (steps of
``|scl_slope|``) and clipped to ``floor(eps * W / |scl_slope|)`` steps and to the type's range, so the bound holds
exactly after re-quantisation; float files are clipped in float64 and nudged towards the clean value if the cast
rounds past the bound.
"""

from __future__ import annotations

import numpy as np

from ..data.budget import Applied, apply_delta  # noqa: F401  (re-exported: the 3D writer's names)
from ..data.subjectset import intensity_window

RULE = ("|protected - clean| <= eps * (hi - lo) per voxel, in the file's scaled units after re-quantisation to its "
        "stored type; [lo, hi] is the window the reader maps onto [0, 1]: the 1st..99.5th percentile of the "
        "volume's non-zero voxels (0..255 for volumes stored as unscaled uint8)")


def window_of(values: np.ndarray, as_uint8: bool) -> tuple[float, float]:
    """The reader's intensity window of one volume (see the module rule); ``as_uint8``: the subject's volumes are
    all stored as unscaled uint8, which the reader takes as they are."""
    return (0.0, 255.0) if as_uint8 else intensity_window(values)
