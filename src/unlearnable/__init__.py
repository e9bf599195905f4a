"""unlearnable: protect images from unauthorised training, audit the protection, make trained models forget.

>>> import unlearnable as ul
>>> ds = ul.ImageSet.from_numpy(images_uint8, labels)       # doctest: +SKIP
>>> prot = ul.protect(ds, "cuda", key=key_bytes, blur=0.3)  # doctest: +SKIP
"""

from __future__ import annotations

from . import protect  # noqa: E402  (a callable package: ul.protect(ds, "cuda", key=...))
from ._version import __version__  # noqa: E402
from .data import ImageSet, load, save  # noqa: E402
from .errors import UserError  # noqa: E402
from .protect import METHODS, Key  # noqa: E402

__all__ = ["ImageSet", "Key", "METHODS", "UserError", "load", "save", "protect", "__version__"]
