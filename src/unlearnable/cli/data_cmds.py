"""``unlearnable datasets``: what can be read and what can be run."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from . import app


@app.command("datasets")
def datasets() -> None:
    """List built-in datasets, supported formats, protection methods and victim models."""
    from ..data.formats import FORMATS
    from ..data.formats.builtin import BUILTINS
    from ..models import MODELS
    from ..protect import METHODS

    con = Console()
    t = Table(title="built-in datasets (no download)")
    t.add_column("name")
    t.add_column("description")
    for k, v in BUILTINS.items():
        t.add_row(k, v)
    con.print(t)
    t = Table(title="formats (SOURCE may be any of these)")
    t.add_column("format")
    t.add_column("what")
    for name in FORMATS.names():
        t.add_row(name, (FORMATS.get(name).__doc__ or "").strip().splitlines()[0])
    con.print(t)
    t = Table(title="protection methods (--method)")
    t.add_column("method")
    t.add_column("what")
    for name in METHODS.names():
        t.add_row(name, METHODS.get(name).summary)
    con.print(t)
    typer.echo("victim models (--model): " + ", ".join(MODELS.names()))
