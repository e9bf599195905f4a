"""What every command gets without code of its own: ``--config FILE`` in, ``config.yaml`` and a report out.

:func:`install` walks the command tree once per run. A command whose run writes an output folder — its ``out``
parameter, or the folder it names with :func:`wrote` when the folder is computed (``evaluate``'s default) — gets,
once it has finished (exit 0, or 3 when its results are written but prove nothing):

- ``OUT/config.yaml``: every parameter's final value (:mod:`unlearnable.config`), so ``--config OUT/config.yaml``
  repeats the run;
- ``OUT/report.md`` and ``OUT/report.html``, rendered from the files in OUT (:mod:`unlearnable.report.folder`).

``--config FILE`` is taken off the command line here and turned into the defaults of the command being run (the
typer/click ``default_map``), so flags given on the command line still win.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from ..config import Config, load_config, write_config
from ..errors import UserError

EXIT_INCONCLUSIVE = 3  # audit.validity.EXIT_INCONCLUSIVE: results were written, the run proved nothing
_UNSET = object()
_declared: list[Any] = [_UNSET]  # the output folder a running command named with wrote()
_withheld: set[str] = set()  # parameters the running command keeps out of config.yaml (withhold())


def wrote(folder: str | Path | None) -> None:
    """Name the output folder of the running command (``None``: this run wrote none, e.g. ``--dry-run``).

    Only needed where the folder is not the command's ``out`` parameter as given."""
    _declared[0] = None if folder is None else Path(folder)


def withhold(*names: str) -> None:
    """Keep these parameters of the running command out of ``config.yaml`` and its report (values that the output
    must not disclose, such as the ids of forgotten subjects)."""
    _withheld.update(names)


def split_config(args: Sequence[str]) -> tuple[list[str], Path | None]:
    """``[..., "--config", "f.yaml", ...]`` -> (the other arguments, ``f.yaml``); the last ``--config`` wins."""
    rest, path, it = [], None, iter(args)
    for a in it:
        if a == "--":
            rest += [a, *it]
            break
        if a == "--config":
            nxt = next(it, None)
            if nxt is None:
                raise UserError("--config: expects a YAML file")
            path = Path(nxt)
        elif a.startswith("--config="):
            path = Path(a.split("=", 1)[1])
        else:
            rest.append(a)
    return rest, path


def _leaves(command: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    subs = getattr(command, "commands", None)
    if not subs:
        return {prefix: command}
    out: dict[tuple[str, ...], Any] = {}
    for name, sub in subs.items():
        out |= _leaves(sub, (*prefix, name))
    return out


def schema(command: Any) -> dict[str, Any]:
    """Parameter name -> Python type of a command, from its signature (the type a config value must have)."""
    return {p.name: p.type_descriptor.annotation for p in command.params if p.expose_value}


def _target(root: Any, args: Sequence[str]) -> tuple[str, ...]:
    """The command path the arguments select (``("segment", "train")``), or ``()`` when they select none."""
    path, node = [], root
    for a in args:
        subs = getattr(node, "commands", None)
        if not subs or a not in subs:
            break
        path.append(a)
        node = subs[a]
    return tuple(path) if not getattr(node, "commands", None) else ()


def defaults_from(root: Any, args: Sequence[str], path: Path) -> dict[str, Any]:
    """The ``default_map`` that makes ``path``'s settings the defaults of the command ``args`` select."""
    leaves = _leaves(root)
    target = _target(root, args)
    if not target:
        raise UserError(f"--config {path}: name a command first (e.g. unlearnable protect --config FILE)")
    command = leaves[target]
    aliases = {o.lstrip("-").replace("-", "_"): p.name for p in command.params for o in getattr(p, "opts", [])
               if o.startswith("--")}  # `compile: true` for the parameter compile_, `forget:` for forget_ids
    config = load_config(path, " ".join(target), schema(command), [" ".join(k) for k in leaves], aliases)
    nested: dict[str, Any] = dict(config.values)
    for name in reversed(target):
        nested = {name: nested}
    return nested


def install(root: Any) -> None:
    """Wrap every leaf command so that a finished run writes ``config.yaml`` and its report into its output."""
    for path, command in _leaves(root).items():
        if path and not getattr(command.invoke, "_finishes", False):
            command.invoke = _finishing(command, " ".join(path))


def _finishing(command: Any, name: str) -> Any:
    invoke = command.invoke

    @functools.wraps(invoke)
    def run(ctx: typer.Context) -> Any:
        _declared[0] = _UNSET
        _withheld.clear()
        try:
            rv = invoke(ctx)
        except typer.Exit as e:
            if e.exit_code == EXIT_INCONCLUSIVE:
                finish(ctx, name)
            raise
        finish(ctx, name)
        return rv

    run._finishes = True  # type: ignore[attr-defined]
    return run


def _is_main() -> bool:
    from ..runtime.distributed import launcher_env

    return launcher_env()[1] == 0


def finish(ctx: typer.Context, name: str) -> None:
    """Write ``config.yaml`` and render the report into the run's output folder (rank 0; nothing if none)."""
    out = _declared[0] if _declared[0] is not _UNSET else ctx.params.get("out")
    if out is None or not Path(out).is_dir() or not _is_main():
        return
    from .. import __version__
    from ..log import warn

    values = {p.name: ctx.params[p.name] for p in ctx.command.params if p.name in ctx.params}  # signature order
    write_config(out, Config(name, values, withheld=frozenset(_withheld)), __version__)
    try:  # the run's results are written; a report that cannot be drawn must not turn it into a failure
        from ..report.folder import render_folder

        render_folder(Path(out))
    except Exception as e:  # noqa: BLE001
        warn(f"{out}: report not rendered ({type(e).__name__}: {e}); run `unlearnable report {out}` to retry")
