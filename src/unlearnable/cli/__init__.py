"""The ``unlearnable`` command line.

Each command group lives in its own module and registers itself on :data:`app` when imported below. Every
user-facing failure ends as one line on stderr and exit code 2 (see :func:`main`).
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from ..errors import UserError

app = typer.Typer(
    name="unlearnable",
    help="Protect images from unauthorised training, audit the protection, and make trained models forget.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command modules register on `app` at import time (one line per group).
from . import data_cmds  # noqa: E402,F401
from . import protect_cmds  # noqa: E402,F401
from . import evaluate_cmds  # noqa: E402,F401
from . import demo_cmds  # noqa: E402,F401
from . import audit_cmds  # noqa: E402,F401
from . import forget_cmds  # noqa: E402,F401
from . import sweep_cmds  # noqa: E402,F401


def _click_exceptions():
    """Typer >= 0.20 vendors click as ``typer._click``; older releases use click itself."""
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("neither typer._click nor click is importable")


_CX = _click_exceptions()


def _fail(message: str, code: int = 2) -> None:
    sys.stderr.write(f"error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        rv = app(args=args, prog_name="unlearnable", standalone_mode=False)
    except UserError as e:
        _fail(str(e))
    except _CX.NoArgsIsHelpError as e:
        typer.echo(e.ctx.get_help() if e.ctx else str(e))
        raise SystemExit(0) from None
    except _CX.UsageError as e:
        _fail(e.format_message())
    except (_CX.Exit, typer.Exit) as e:
        raise SystemExit(e.exit_code) from None
    except (KeyboardInterrupt, _CX.Abort, typer.Abort):
        _fail("interrupted; nothing was written (re-run with --resume where supported)", 130)
    except FileNotFoundError as e:
        _fail(f"{e.filename}: no such file or directory")
    except PermissionError as e:
        _fail(f"{e.filename}: permission denied")
    except OSError as e:
        if os.environ.get("UNLEARNABLE_DEBUG"):
            raise
        _fail(f"{getattr(e, 'filename', '') or ''}: {e.strerror or e}")
    else:
        # Non-standalone typer returns an Exit's code instead of raising it (KeyboardInterrupt becomes 130).
        if rv == 130:
            _fail("interrupted; nothing was written (re-run with --resume where supported)", 130)
        if isinstance(rv, int) and rv:
            raise SystemExit(rv)
