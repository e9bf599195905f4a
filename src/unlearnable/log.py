"""Console output: rank 0 only, on stderr, so stdout stays clean for JSON and tables."""

from __future__ import annotations

import sys

from rich.console import Console

_console = Console(stderr=True, highlight=False, soft_wrap=True)


def log(message: str) -> None:
    from .runtime import distributed as D

    if D.is_main():
        _console.print(message)


def warn(message: str) -> None:
    from .runtime import distributed as D

    if D.is_main():
        _console.print(f"[yellow]warning:[/yellow] {message}")


def progress_enabled() -> bool:
    """Progress bars only on an interactive rank-0 terminal (or when forced)."""
    from .runtime import distributed as D

    return D.is_main() and sys.stderr.isatty()
