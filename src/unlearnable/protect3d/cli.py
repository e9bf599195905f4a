"""The subjects branch of ``unlearnable protect`` (called from ``cli/protect_cmds.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from ..runtime import distributed as D
from ..utils import parse_number
from .base import VOLUME_METHODS


def protect_subjects_cmd(source: str, method: str | None, out: Path, key: Path | None, splits: str,
                         params: dict[str, Any], force: bool, device: str, seed: int, test_fraction: str,
                         resume: bool, unused: list[str]) -> None:
    """Check the options that apply to subjects, then run :func:`~.run.protect_subjects`."""
    from .run import protect_subjects

    if unused:
        raise UserError(f"{', '.join(unused)}: not available for 3D subjects ({source}); see 'unlearnable protect "
                        "--help'")
    if method is None:
        raise UserError(f"--method: missing; 3D methods: {', '.join(VOLUME_METHODS.names())}")
    for k in ("lr_scaling", "warmup_epochs"):
        if k in params:
            raise UserError(f"--{k.replace('_', '-')}: not a parameter of 3D method '{method}'")
    try:
        protect_subjects(source, method, out, key, splits, params, force, device, seed,
                         parse_number(test_fraction, "--test-fraction"), resume)
    finally:
        D.shutdown()
