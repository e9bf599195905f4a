"""``unlearnable cues SOURCE``: what a dataset's own colour (2D) or intensity (3D) gives away, before anything is
protected.

For images, the colour-cue check that ``protect --verify``, ``evaluate`` and ``audit`` write beside their results
(:mod:`unlearnable.audit.cues`); for 3D subjects, the intensity-cue check of ``audit-seg``
(:mod:`unlearnable.protect3d.cues`) on the split ``protect`` would make. On its own and in seconds, a user can see
which classes or labels no protection within a budget will hide from a victim that reads colour or intensity,
before spending a verification or an audit on them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from . import app


@app.command("cues")
def cues_cmd(
    source: str = typer.Argument(..., help="image dataset (.npz, image folder, torchvision root, built-in name) or "
                                 "3D subjects (MRBrainS18 folder, NIfTI CSV, brain-phantoms:...)"),
    eps: str = typer.Option("8/255", "--eps", help="the L-inf budget to judge mean-colour gaps against"),
    size: int | None = typer.Option(None, "--size", help="resize images to N x N first (mixed-size sources)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the full result to this JSON file"),
    test_fraction: str = typer.Option("0.2", "--test-fraction", help="held-out share (3D subjects and class folders "
                                      "without a test split), as for protect"),
    seed: int = typer.Option(0, "--seed", help="seed of that split, as for protect"),
) -> None:
    """What the data's own colour (images) or intensity (3D subjects) gives away, before anything is protected.

    Images: which classes each image's colour statistics alone tell apart (a linear classifier fitted on the clean
    training split, scored on the test split), and whether their mean colours lie further apart than the budget can
    close. 3D subjects: the Dice of a per-intensity label table on the held-out subjects, per label, and the share of
    labelled voxels within the budget of its boundaries."""
    from rich.console import Console
    from rich.table import Table

    from ..audit.cues import colour_cues
    from ..audit.evaluate import held_out_split
    from ..data import load
    from ..errors import UserError
    from ..utils import check_separate, parse_number, write_json

    budget = parse_number(eps, "--eps")
    if not 0 < budget <= 1:
        raise UserError(f"--eps {eps}: must be in (0, 1], e.g. 8/255")
    if json_out is not None:
        check_separate({"SOURCE": source}, {"--json": json_out})
    from ..protect3d import is_subject_source
    if is_subject_source(source):
        _subject_cues(source, budget, parse_number(test_fraction, "--test-fraction"), seed, json_out)
        return
    ds = load(source, size=size, seed=seed, test_fraction=parse_number(test_fraction, "--test-fraction"))
    if ds.num_classes < 2:
        raise UserError(f"{source}: {ds.num_classes} class; the check needs at least 2")
    cues = colour_cues(ds, held_out_split(ds, source), budget)
    table = Table(title=f"{source}: {cues['cue']} alone {cues['acc']:.1%} on clean '{cues['test_split']}' images "
                        f"(chance {cues['chance']:.1%})")
    for col in ("class", "recall", "precision", "mean colour", "nearest class", "gap (levels)", "named"):
        table.add_column(col)
    apart = set(cues.get("apart_beyond_budget") or [])
    for r in cues["per_class"]:
        named = r["class"] in cues["named"]
        table.add_row(r["class"], f"{r['recall']:.0%}", f"{r['precision']:.0%}",
                      "/".join(f"{v:g}" for v in r["mean_colour"]), str(r["nearest"] or "-"),
                      "-" if r["gap_levels"] is None else f"{r['gap_levels']:g}",
                      ("yes, beyond the budget" if r["class"] in apart else "yes") if named else "")
    Console(width=120).print(table)
    typer.echo(cues["summary"] or f"the images' own {cues['cue']} alone tells no class apart")
    if cues["named"]:
        typer.echo(f"expect a victim trained on a protection within {eps} to keep some of these classes: a "
                   f"network learns them from {cues['cue']} early, before a shortcut takes over (standardising "
                   "each image's colour let the same tiles protect the benchmark's photographs, but not photographs "
                   "whose histogram's shape names them: docs/benchmarks.md, \"Colour taken away\" and "
                   "\"Held-out data\")")
    if json_out is not None:
        write_json(json_out, cues)


def _subject_cues(source: str, budget: float, test_fraction: float, seed: int, json_out: Path | None) -> None:
    """The 3D branch: subjects split as ``protect`` splits them, the intensity table fitted on the training ones."""
    from rich.console import Console
    from rich.table import Table

    from ..data.subjects import load_subjects
    from ..errors import UserError
    from ..protect3d.cues import intensity_cues
    from ..protect3d.run import assign_splits
    from ..utils import write_json

    s = load_subjects(source, pad=True)
    s = s.with_splits(assign_splits(s.splits, s.ids, seed, test_fraction))
    train = [i for i, sp in enumerate(s.splits) if sp == "train"]
    held = [i for i, sp in enumerate(s.splits) if sp != "train"]
    if not train or not held:
        raise UserError(f"{source}: needs training and held-out subjects (found {len(train)} and {len(held)}); "
                        "set --test-fraction")
    cues = intensity_cues(s, train, s.subset(held), budget)
    table = Table(title=f"{source}: per-intensity label table on {len(held)} held-out subjects "
                        f"({len(train)} training)")
    table.add_column("label")
    table.add_column("Dice from intensity alone")
    for r in cues["per_label"]:
        table.add_row(r["label"], f"{r['dice']:.3f}")
    Console(width=120).print(table)
    typer.echo(cues["summary"])
    if json_out is not None:
        write_json(json_out, cues)
