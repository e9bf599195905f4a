"""``unlearnable cues SOURCE``: what a dataset's own colour gives away, before anything is protected.

The colour-cue check that ``protect --verify``, ``evaluate`` and ``audit`` write beside their results
(:mod:`unlearnable.audit.cues`), on its own and in about a second: a user can see which classes no protection within
a budget will hide from a victim that reads colour, before spending a verification on them.
"""

from __future__ import annotations

from pathlib import Path

import typer

from . import app


@app.command("cues")
def cues_cmd(
    source: str = typer.Argument(..., help="image dataset: .npz, image folder, torchvision root or built-in name"),
    eps: str = typer.Option("8/255", "--eps", help="the L-inf budget to judge mean-colour gaps against"),
    size: int | None = typer.Option(None, "--size", help="resize images to N x N first (mixed-size sources)"),
    json_out: Path | None = typer.Option(None, "--json", help="also write the full result to this JSON file"),
) -> None:
    """Which classes each image's colour statistics alone tell apart (a linear classifier fitted on the clean
    training split, scored on the test split), and whether their mean colours lie further apart than the budget
    can close."""
    from rich.console import Console
    from rich.table import Table

    from ..audit.cues import colour_cues, describe
    from ..audit.evaluate import held_out_split
    from ..data import load
    from ..errors import UserError
    from ..utils import check_separate, parse_number, write_json

    budget = parse_number(eps, "--eps")
    if not 0 < budget <= 1:
        raise UserError(f"--eps {eps}: must be in (0, 1], e.g. 8/255")
    if json_out is not None:
        check_separate({"SOURCE": source}, {"--json": json_out})
    ds = load(source, size=size)
    if ds.num_classes < 2:
        raise UserError(f"{source}: {ds.num_classes} class; the check needs at least 2")
    cues = colour_cues(ds, held_out_split(ds, source), budget)
    cues["summary"] = describe(cues)
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
    if json_out is not None:
        write_json(json_out, cues)
