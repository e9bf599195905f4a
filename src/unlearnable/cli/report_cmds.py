"""``unlearnable report DIR``: render an output folder to report.md and a self-contained report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app


@app.command("report")
def report_cmd(folder: Path = typer.Argument(..., help="an output folder of protect, evaluate, audit, sweep, "
                                             "segment train, forget or demo (any folder: JSON scalars and PNGs)")
               ) -> None:
    """Render FOLDER's results files to FOLDER/report.md and FOLDER/report.html (figures embedded); never trains."""
    from ..report.folder import render_folder
    from ..report.kinds import detect

    md, page = render_folder(folder)
    typer.echo(f"{detect(folder)} report: {md}, {page}")
