"""Moved to :mod:`unlearnable.runtime.distributed`; this name stays for code that still imports it from here.

The alias makes ``unlearnable.train.distributed`` the very same module object, so state (the process group
info) and monkeypatching behave exactly as before. New code imports ``unlearnable.runtime.distributed``.
"""

from __future__ import annotations

import sys

from ..runtime import distributed as _moved
from ..runtime.distributed import *  # noqa: F401,F403  (for tools that read names statically)

sys.modules[__name__] = _moved
