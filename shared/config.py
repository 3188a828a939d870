"""Typed configs for both stages: nested frozen dataclasses, layered defaults -> file -> flags.

`ExtractConfig` and `TrainConfig` are plain frozen dataclasses nested by concern; this module turns dicts
(from a YAML/TOML file or from command-line flags) into them, and back, so the resolved config can be
saved with every output. An unknown key is an error that names it and the file it came from.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from avaf.shared.errors import ConfigError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """A nested plain dict (JSON-ready) of a config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def from_dict(cls: type[T], d: dict, where: str = "config", prefix: str = "") -> T:
    """Build `cls` from a (possibly partial) nested dict; errors name `where` (e.g. a file) and the key."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a table of settings, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        names = ", ".join(prefix + k for k in unknown)
        raise ConfigError(f"{where}: unknown setting(s) {names}; known here: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in d.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, where, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(hint, value, f"{where}: {prefix}{name}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # range checks in __post_init__
        raise ConfigError(f"{where}: {e}") from e


def nest(flat: dict) -> dict:
    """{"model.dim": 8, "optim": {"lr": 1}} -> {"model": {"dim": 8}, "optim": {"lr": 1}}; None (a flag
    not given) is dropped."""
    out: dict = {}
    for key, value in flat.items():
        if isinstance(value, dict):
            value = nest(value)
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = (
            merge(node[leaf], value)
            if isinstance(value, dict) and isinstance(node.get(leaf), dict)
            else value
        )
    return out


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Check a value against its field's type: ints pass as floats, lists as tuples, None where optional."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, where)
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint in (int, float, bool, str):
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, bool) and hint is not bool or not isinstance(value, hint):
            raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def merge(base: dict, update: dict) -> dict:
    """Nested dict update: tables merge, everything else replaces."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_file(path: str | Path) -> dict:
    """Settings from a .yaml/.yml/.toml/.json file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror})") from e
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text) or {}
    except Exception as e:  # every parser's own error type: report it with the file name
        raise ConfigError(f"{path}: not a valid {path.suffix.lstrip('.') or 'YAML'} config file: {e}") from e


def resolve(cls: type[T], file: str | Path | None = None, flags: dict | None = None) -> T:
    """Defaults, then the file, then flags: only the flags the user gave, nested or dotted ("model.dim")."""
    d = to_dict(cls())
    if file is not None:
        from_file = read_file(file)
        from_dict(cls, from_file, str(file))  # the file's own errors name the file
        d = merge(d, from_file)
    return from_dict(cls, merge(d, nest(flags or {})), "config")
