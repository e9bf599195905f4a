"""Protections: one method per file, registered in :data:`METHODS`."""

from . import beo, cuda, em, lsp, noise, ops  # noqa: E402,F401  (registration)
from .base import METHODS, Protection, add_within_linf, make_params, protect
from .keys import Key, load_key, save_key

__all__ = ["METHODS", "Protection", "Key", "protect", "make_params", "add_within_linf", "load_key", "save_key"]
