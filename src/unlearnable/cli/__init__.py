"""The ``unlearnable`` command line.

Each command group lives in its own module and registers itself on :data:`app` when imported below. Every
failure ends as one line on stderr: exit code 2 for user errors, 1 for anything unexpected (see :func:`main`).
Only typer's public API is used (``typer.Exit``, ``typer.Abort``, ``typer.TyperException``, ``typer.main``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import typer

from .. import __version__
from ..errors import UserError
from ..utils import KEPT
from . import outputs

app = typer.Typer(
    name="unlearnable",
    help="Protect images from unauthorised training, audit the protection, and make trained models forget.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: wraps at the terminal width, no boxes, no <type> placeholders
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"unlearnable {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Protect images from unauthorised training, audit the protection, and make trained models forget."""


# Command modules register on `app` at import time (one line per group).
from . import data_cmds  # noqa: E402,F401
from . import protect_cmds  # noqa: E402,F401
from . import evaluate_cmds  # noqa: E402,F401
from . import demo_cmds  # noqa: E402,F401
from . import audit_cmds  # noqa: E402,F401
from . import forget_cmds  # noqa: E402,F401
from . import sweep_cmds  # noqa: E402,F401
from . import report_cmds  # noqa: E402,F401
from . import seg_audit_cmds  # noqa: E402,F401
from . import cues_cmds  # noqa: E402,F401


def _fail(message: str, code: int = 2) -> None:
    line = " ".join(str(message).split())
    for path, hint in KEPT:  # work a re-run needs was kept: say where, and how to use it
        line += f" (kept {path}: {hint})"
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()
    raise SystemExit(code)


_METAVARS = {"int": "N", "float": "X", "Path": "PATH", "str": "TEXT", "bool": "BOOL"}


def readable_metavars(command: typer.core.TyperGroup | typer.core.TyperCommand) -> None:
    """Give every option and argument a plain metavar (``N``, ``PATH``, ``MODEL_DIR``) instead of ``<list[str]>``."""
    for param in getattr(command, "params", []):
        if param.metavar is not None or getattr(param, "is_flag", False):
            continue
        if param.param_type_name == "argument":
            param.metavar = param.name.upper()
        else:
            bare = param.bare_type() if hasattr(param, "bare_type") else ""
            param.metavar = _METAVARS.get(bare.removeprefix("list[").removesuffix("]"), "VALUE")
    for sub in getattr(command, "commands", {}).values():
        readable_metavars(sub)


def _where(e: BaseException) -> str:
    """``file.py:LINE in function`` of the innermost frame of ``e``'s traceback."""
    tb = traceback.extract_tb(e.__traceback__)
    if not tb:
        return "unknown location"
    f = tb[-1]
    return f"{Path(f.filename).name}:{f.lineno} in {f.name}"


def _save_traceback(e: BaseException, args: list[str]) -> Path:
    """Write the full traceback to a file in the system temp folder (never beside the user's data)."""
    fd, name = tempfile.mkstemp(prefix="unlearnable-error-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(f"unlearnable {__version__}\ncommand: unlearnable {' '.join(args)}\n\n")
        f.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
    return Path(name)


class Terminated(BaseException):
    """SIGTERM: a batch scheduler's time limit (SLURM, LSF), torchrun stopping its workers, ``kill``. Raised in the
    main thread so that the run unwinds like Ctrl-C: temporary output folders are removed, checkpoints a re-run resumes
    from are kept, and the last line says which."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated` (the default would end the process at once, leaving
    half-built output folders behind and saying nothing); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


INTERRUPTED = "nothing was written (re-run with --resume where supported)"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2.

    Exit codes: 0 success; 1 an unexpected error (one line, full traceback saved to a file); 2 a user error or bad
    usage, nothing written; 3 the run finished but proved nothing (a clean victim that did not beat chance, see
    ``audit.validity.baseline_valid``); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM).
    """
    args = sys.argv[1:] if argv is None else argv
    KEPT.clear()
    with _sigterm_unwinds():
        _run(args)


def _run(args: list[str]) -> None:
    try:
        command = typer.main.get_command(app)
        readable_metavars(command)
        outputs.install(command)  # every command: config.yaml and a report in its output folder
        args, config = outputs.split_config(args)
        defaults = outputs.defaults_from(command, args, config) if config is not None else None
        rv = command.main(args=args, prog_name="unlearnable", standalone_mode=False, default_map=defaults)
    except UserError as e:
        _fail(str(e))
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except (KeyboardInterrupt, typer.Abort):
        _fail(f"interrupted; {INTERRUPTED}", 130)
    except Terminated:
        _fail(f"terminated (SIGTERM); {INTERRUPTED}", 143)
    except typer.TyperException as e:  # click's usage errors, public through typer
        if type(e).__name__ == "NoArgsIsHelpError":  # a command group called without a command: show its help
            typer.echo(e.format_message())
            raise SystemExit(0) from None
        _fail(e.format_message(), getattr(e, "exit_code", 2))
    except FileNotFoundError as e:
        _fail(f"{e.filename}: no such file or directory")
    except PermissionError as e:
        _fail(f"{e.filename}: permission denied")
    except Exception as e:  # a bug or a resource failure (MemoryError, a torch RuntimeError): one line + a log file
        if os.environ.get("UNLEARNABLE_DEBUG"):
            raise
        if isinstance(e, OSError) and e.strerror:  # disk full, read-only folder...: the environment, not a bug
            _fail(f"{getattr(e, 'filename', '') or ''}: {e.strerror}")
        log_path = _save_traceback(e, args)
        command = next((a for a in args if not a.startswith("-")), "unlearnable")
        what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        _fail(f"'{command}' failed unexpectedly with {what} at {_where(e)}; no output was written; "
              f"full traceback saved to {log_path}", 1)
    else:
        # Non-standalone typer returns an Exit's code instead of raising it (KeyboardInterrupt becomes 130).
        if rv == 130:
            _fail(f"interrupted; {INTERRUPTED}", 130)
        if isinstance(rv, int) and rv:
            raise SystemExit(rv)
