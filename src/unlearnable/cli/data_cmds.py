"""``unlearnable datasets``: the complete catalogue of what can be read and what can be run.

Every section is read from a registry (or from the module that defines the source), so a new method, format,
model, defence or strategy appears here without editing this file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from . import app


def plain(text: str | None) -> str:
    """First line of a docstring or summary, without reST markup (``name`` -> name, :mod:`x` -> x)."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    first = re.sub(r":\w+:`~?([^`]+)`", r"\1", first)
    return first.replace("``", "").replace("`", "")


def _described(names: Iterable[str], get: Callable[[str], Any], attr: str = "summary") -> list[tuple[str, str]]:
    return [(n, plain(getattr(get(n), attr, "") or get(n).__doc__)) for n in names]


def catalogue() -> list[tuple[str, list[tuple[str, str]]]]:
    """(section title, [(name, one-line description)]) for everything the toolkit can read and run."""
    from ..data import phantoms
    from ..data.formats import FORMATS
    from ..data.formats.builtin import BUILTINS
    from ..data.subjects import volume_formats
    from ..forget import STRATEGIES
    from ..models import MODELS
    from ..models.seg3d import SEG_MODELS
    from ..protect import METHODS
    from ..protect3d import VOLUME_METHODS
    from ..train.defenses import DEFENSES

    vols = volume_formats()
    return [
        ("built-in 2D datasets (SOURCE; nothing is downloaded)", [(k, plain(v)) for k, v in BUILTINS.items()]),
        ("2D formats (SOURCE may be any of these)", _described([n for n in FORMATS.names() if n not in vols],
                                                                FORMATS.get, "__doc__")),
        ("3D subjects (segment train / forget SUBJECTS)", [
            ("brain-phantoms[:n=12,size=32,seed=0]", plain(phantoms.__doc__)),
            *_described(vols, FORMATS.get, "__doc__")]),
        ("protection methods (protect --method, audit --methods)", _described(METHODS.names(), METHODS.get)),
        ("3D protection methods (protect SUBJECTS --method; audit-seg)", _described(VOLUME_METHODS.names(),
                                                                                      VOLUME_METHODS.get)),
        ("training-time defences (evaluate --defense, audit --defenses)", _described(DEFENSES.names(),
                                                                                     DEFENSES.get)),
        ("victim models (evaluate/audit --model)", _described(MODELS.names(), MODELS.get, "__doc__")),
        ("3D segmentation models (segment train --model)", _described(SEG_MODELS.names(), SEG_MODELS.get,
                                                                       "__doc__")),
        ("forget strategies (forget --strategy)", _described(STRATEGIES.names(), STRATEGIES.get, "__doc__")),
    ]


@app.command("datasets")
def datasets() -> None:
    """List everything: built-in data, formats, 3D subjects, methods, defences, victims, 3D models, strategies."""
    con = Console(soft_wrap=False)
    for title, rows in catalogue():
        t = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
        t.add_column("name", no_wrap=True, style="bold")
        t.add_column("what", overflow="fold")
        for name, what in rows:
            t.add_row(name, what or "-")
        con.print(t)
        typer.echo("")
