"""``unlearnable audit-seg``: train a 3D segmenter on protected and on clean subjects, score both on held-out
clean subjects."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UserError
from ..models.seg3d import SEG_MODELS
from . import app
from .common import choices_help


@app.command("audit-seg")
def audit_seg_cmd(
    protected: Path = typer.Option(..., "--protected", help="output of 'unlearnable protect SUBJECTS'"),
    clean: str = typer.Option(..., "--clean", help="the SUBJECTS it was protected from (folder, .csv, "
                              "brain-phantoms:...)"),
    out: Path = typer.Option(..., "--out", "-o", help="results folder (results.json, audit_seg.png, report.md)"),
    model: str = typer.Option("unet", "--model", show_default=False,
                              help=choices_help("one of:", SEG_MODELS.names(), " (default: unet)")),
    width: int = typer.Option(8, "--width", help="base channels"),
    patch: int = typer.Option(32, "--patch", help="training patch edge (voxels, multiple of 8)"),
    epochs: int = typer.Option(20, "--epochs"),
    batch_size: int = typer.Option(2, "--batch-size", help="GLOBAL batch size"),
    lr: float = typer.Option(1e-3, "--lr"),
    patches_per_subject: int = typer.Option(2, "--patches-per-subject"),
    defense: str = typer.Option("none", "--defense", help="none, aug (flips, intensity shift, Gaussian smoothing) "
                                "or none,aug"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    force: bool = typer.Option(False, "--force", help="replace an existing results folder"),
) -> None:
    """Train --model on the protected and on the clean training subjects (same recipe); Dice/MAE on held-out clean
    subjects, per defence; a figure of one axial slice."""
    import numpy as np

    from ..log import log
    from ..protect3d.audit import DEFENSES, audit_seg
    from ..registry import look_up_option
    from ..report.seg_figures import write_report
    from ..runtime.distributed import init_from_env, is_main, shutdown
    from ..segment.train import SegConfig
    from ..utils import atomic_dir, check_output_free, check_separate, write_json

    look_up_option(model, SEG_MODELS.names(), "--model")
    defenses = [d.strip() for d in defense.split(",") if d.strip()]
    for d in defenses:
        look_up_option(d, DEFENSES, "--defense")
    if not defenses or len(set(defenses)) != len(defenses):
        raise UserError(f"--defense '{defense}': give none, aug or none,aug")
    if patch < 16 or patch % 8 or epochs < 1:
        raise UserError(f"--patch {patch} / --epochs {epochs}: patch a multiple of 8 >= 16, at least one epoch")
    check_output_free(out, force)
    check_separate({"--protected": protected, "--clean": clean}, {"--out": out})
    info = init_from_env(device)
    cfg = SegConfig(model, width, patch, epochs, batch_size, lr, patches_per_subject, seed)
    try:
        results, slices = audit_seg(protected, clean, cfg, defenses, info.device)
        if is_main():
            with atomic_dir(out, force) as tmp:
                write_json(tmp / "results.json", results)
                np.savez_compressed(tmp / "slices.npz", **slices)
                write_report(tmp)
            for d, r in results["runs"].items():
                log(f"defence {d}: held-out Dice clean-trained {r['clean']['dice']:.3f}, protected-trained "
                    f"{r['protected']['dice']:.3f} (ratio {r['dice_ratio']})")
            log(f"wrote {out}")
    finally:
        shutdown()
