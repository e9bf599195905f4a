"""Command configurations: one typed config per command, read from YAML, written beside every output.

A config is the set of a command's parameters. Its schema (parameter name -> Python type) comes from the command's
own signature, so a new command gets a config without an entry here. A YAML file is either flat (the parameters of
the command being run) or split into sections named by command (``protect:``, ``segment train:``), so that one file
may hold settings for several commands; the ``config.yaml`` written beside an output uses one section, which keeps
it from being applied to another command by mistake.

Precedence, highest first: flags on the command line, the file, the command's defaults.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .registry import did_you_mean

CONFIG_FILE = "config.yaml"
# Types a config value may have; anything else in a signature is carried as a string.
SCALARS = (bool, int, float, str, Path)


@dataclass(frozen=True)
class Config:
    """The resolved parameters of one command run.

    Attributes:
        command: the command path without the program name, e.g. ``protect`` or ``segment train``.
        values: every parameter's final value, by parameter name (``batch_size``), in signature order.
        from_file: names whose value came from the config file (the rest: flags or defaults).
        withheld: names never written out (their values would disclose what the output must not, e.g. the ids of
            forgotten subjects); a re-run asks for them again.
    """

    command: str
    values: Mapping[str, Any]
    from_file: frozenset[str] = field(default_factory=frozenset)
    withheld: frozenset[str] = field(default_factory=frozenset)


def _type_name(typ: Any) -> str:
    if getattr(typ, "__origin__", None) is list:
        return "list"
    return {bool: "true/false", int: "integer", float: "number", Path: "path"}.get(typ, "text")


def convert(value: Any, typ: Any, where: str) -> Any:
    """``value`` read from YAML as ``typ`` (``int``, ``float``, ``bool``, ``str``, ``Path``, ``list[str]``...).

    Strict where a silent change would surprise: ``true`` is not a number and ``1.5`` is not an integer; numbers
    are accepted for text options (``lr: 0.1`` for an option typed as text such as ``--lr 8/255``).
    """
    if value is None:
        return None
    item = (getattr(typ, "__args__", None) or (str,))[0] if getattr(typ, "__origin__", None) is list else None
    if item is not None:
        values = value if isinstance(value, list) else [value]
        return [convert(v, item, f"{where}[{i}]") for i, v in enumerate(values)]
    bad = UserError(f"{where}: {value!r} is not a valid {_type_name(typ)}")
    if isinstance(value, (dict, list)):
        raise bad
    if typ is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if isinstance(value, bool):  # YAML `yes`/`true` for a text option is almost always a mistake
        raise bad
    return str(value)


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise UserError(f"{path}: not valid YAML{line}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a mapping of parameter names to values, got {type(doc).__name__}")
    return doc


def section(doc: Mapping[str, Any], command: str, commands: Sequence[str], path: Path) -> dict[str, Any]:
    """The part of ``doc`` that configures ``command``: its section, or the whole document when it is flat."""
    named = [k for k in doc if str(k) in commands]
    if not named:
        return dict(doc)
    if len(named) != len(doc):
        other = next(str(k) for k in doc if str(k) not in commands)
        raise UserError(f"{path}: key '{other}' is not a command{did_you_mean(other, commands)}; a file split into "
                        f"command sections ({', '.join(map(str, named))}) holds only sections")
    if command not in doc:
        raise UserError(f"{path}: no '{command}' section (it has: {', '.join(map(str, named))})")
    body = doc[command]
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise UserError(f"{path}: section '{command}' must be a mapping of parameter names to values")
    return body


def load_config(path: str | os.PathLike, command: str, schema: Mapping[str, Any],
                commands: Sequence[str] = (), aliases: Mapping[str, str] | None = None) -> Config:
    """Read the settings of ``command`` from the YAML file ``path``, checked against ``schema`` (name -> type).

    Keys may be written as parameter names (``batch_size``) or as option names (``batch-size``, ``--batch-size``);
    ``aliases`` maps other accepted names to parameter names (``compile`` for the parameter ``compile_``).
    An unknown key, a wrong type or a malformed file is one line naming the file and the key.
    """
    path = Path(path)
    body = section(_read_yaml(path), command, commands, path)
    values: dict[str, Any] = {}
    for raw, value in body.items():
        key = str(raw).lstrip("-").replace("-", "_")
        key = (aliases or {}).get(key, key)
        if key not in schema:
            raise UserError(f"{path}: unknown key '{raw}' for '{command}'{did_you_mean(key, schema)}; "
                            f"known: {', '.join(schema)}")
        values[key] = convert(value, schema[key], f"{path}: {raw}")
    return Config(command, values, frozenset(values))


def plain(value: Any) -> Any:
    """A value as YAML writes it back (paths as text, tuples as lists, enums by value)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, SCALARS):
        return value.value
    return value


def dump_config(config: Config, version: str = "") -> str:
    """YAML text that :func:`load_config` reads back to the same values (one section, named by the command)."""
    import yaml

    head = (f"# unlearnable {version}: every parameter of this `unlearnable {config.command}` run, as resolved.\n"
            f"# Re-run it with: unlearnable {config.command} --config config.yaml (flags override the file)\n")
    if config.withheld:
        head += f"# withheld (pass them again): {', '.join(sorted(config.withheld))}\n"
    body = {config.command: {k: plain(v) for k, v in config.values.items() if k not in config.withheld}}
    return head + yaml.safe_dump(body, sort_keys=False, default_flow_style=False, allow_unicode=True)


def write_config(folder: str | os.PathLike, config: Config, version: str = "") -> Path:
    """Write ``folder/config.yaml`` atomically (temporary file in the same folder, then rename)."""
    folder = Path(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".{CONFIG_FILE}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dump_config(config, version))
        os.replace(tmp, folder / CONFIG_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / CONFIG_FILE
