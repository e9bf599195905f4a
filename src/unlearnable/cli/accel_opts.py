"""The device options every training command shares: ``--precision``, ``--sync-bn``, ``--compile``."""

from __future__ import annotations

import typer

PRECISION = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16: autocast on the device (fp16 adds a "
                         "gradient scaler; bf16 also runs on a CPU)")
SYNC_BN = typer.Option(False, "--sync-bn", help="SyncBatchNorm across ranks when data-parallel on GPUs (a no-op, "
                       "recorded as such, with one process)")
COMPILE = typer.Option(False, "--compile", help="torch.compile the trained networks (slow start, faster steps)")


def accel(precision: str, sync_bn: bool = False, compile: bool = False):
    """The checked :class:`~unlearnable.runtime.precision.Accel` of these options (a bad value is one line)."""
    from ..runtime.precision import Accel

    return Accel(precision, compile, sync_bn).validate()
