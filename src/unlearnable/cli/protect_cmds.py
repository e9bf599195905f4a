"""``unlearnable protect``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..log import progress_enabled
from ..utils import parse_number
from . import app
from .common import parse_params


@app.command("protect")
def protect_cmd(
    source: str = typer.Argument(..., help="a .npz file, an image folder, a Pets/Flowers102 root, or a built-in name"),
    method: str = typer.Option(..., "--method", "-m", help="protection method (see `unlearnable datasets`)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder (written atomically)"),
    key: Path = typer.Option(None, "--key", help="key file (mode 0600); created if missing; default OUT.key"),
    splits: str = typer.Option("train", "--splits", help="splits to protect: train (default), all, or a,b"),
    param: list[str] = typer.Option(None, "--param", "-p", help="method parameter NAME=VALUE (repeatable)"),
    eps: str = typer.Option(None, "--eps", help="L-inf budget for budgeted methods, e.g. 8/255 (same as "
                                                  "--param eps=...)"),
    force: bool = typer.Option(False, "--force", help="replace an existing output"),
    size: int = typer.Option(None, "--size", help="resize images to SIZE x SIZE (needed when sizes differ)"),
    seed: int = typer.Option(0, "--seed", help="seed of the train/test split for class-folder sources"),
    test_fraction: str = typer.Option("0.2", "--test-fraction", help="test share for class-folder sources"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto"),
) -> None:
    """Protect the training split of SOURCE and write it to OUT in the same format, with a manifest."""
    from ..protect.run import protect_source
    from ..train.distributed import resolve_device

    params = parse_params(param)
    if eps is not None:
        params["eps"] = eps
    protect_source(source, method, out, key, splits, params, force, resolve_device(device), size, seed,
                   parse_number(test_fraction, "--test-fraction"), progress_enabled())
