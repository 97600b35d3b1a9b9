"""Stage configuration: one frozen dataclass per ``params.yaml`` section.

``load_section`` checks the whole section at once and reports every
problem together (unknown keys, missing keys, wrong types), naming the
file, the section and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.core.errors import DwPipeError

T = TypeVar("T")
DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(DwPipeError, ValueError):
    """A params section that does not fit its stage's configuration."""


def read_params(path: Path = DEFAULT_PARAMS) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root or pass --params)")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections at the top level")
    return data


def load_section(cls: type[T], section: str, path: Path = DEFAULT_PARAMS, **overrides: Any) -> T:
    """Build ``cls`` from ``params.yaml[section]``; ``overrides`` that are not None win."""
    raw = read_params(path).get(section)
    if raw is None:
        raise ConfigError(f"{path}: no '{section}' section")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: section '{section}' must be a mapping")
    values = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    return from_mapping(cls, values, f"{path}:{section}")


def from_mapping(cls: type[T], values: dict[str, Any], where: str) -> T:
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    errors = [f"unknown key '{k}' (known: {', '.join(fields)})" for k in values if k not in fields]
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in values:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                errors.append(f"missing key '{name}'")
            continue
        try:
            kwargs[name] = _coerce(values[name], hints[name])
        except (TypeError, ValueError) as exc:
            errors.append(f"key '{name}': {exc}")
    if errors:
        raise ConfigError(f"{where}: " + "; ".join(errors))
    return cls(**kwargs)


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except (TypeError, ValueError):
                continue
        raise TypeError(f"{value!r} does not fit {hint}")
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {value!r}")
        key_t, val_t = args or (Any, Any)
        return {_coerce(k, key_t): _coerce(v, val_t) for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        item_t = args[0] if args else Any
        return tuple(_coerce(v, item_t) for v in value)
    if hint is Any:
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise TypeError(f"expected a path, got {value!r}")
        return Path(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if type(value) is not hint:
            raise TypeError(f"expected {hint.__name__}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {value!r}")
        return from_mapping(hint, value, hint.__name__)
    raise TypeError(f"unsupported config type {hint}")
