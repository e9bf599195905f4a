"""Protections: one method per file, registered in :data:`METHODS`."""

import sys
import types
from typing import Any

from . import adv, ar, beo, cuda, em, lsp, noise, ops, pil, tiles, uc  # noqa: E402,F401  (registration)
from .base import METHODS, Protection, add_within_linf, make_params, protect
from .keys import Key, load_key, save_key

__all__ = ["METHODS", "Protection", "Key", "protect", "make_params", "add_within_linf", "load_key", "save_key"]


class _CallableModule(types.ModuleType):
    """``unlearnable.protect`` is both this package and the top-level function ``ul.protect(ds, "cuda", ...)``.

    Binding the function as ``unlearnable.protect`` would shadow the package (``import unlearnable.protect.run``
    would then fail); making the package callable keeps both spellings working.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return protect(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
