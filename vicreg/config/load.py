"""Reading a config: YAML in, every key and type checked, ``section.key=value`` overrides.

``load_config(path, overrides)`` reads a YAML file, applies the overrides and checks every key
and type, so a typo fails in a second with a line naming the file and the key instead of after
an hour of training."""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ..errors import ConfigError
from ..io import atomic_write
from .tree import FIXED_CHANNELS, Config
from .validate import validate

# Keys of earlier versions, for a pointed error instead of "unknown key".
RENAMED = {"augment.crop_scale": "augment.crop_min_scale and augment.crop_max_scale",
           "augment.blur_p": "augment.blur_p_a and augment.blur_p_b",
           "augment.solarize_p": "augment.solarize_p_a and augment.solarize_p_b",
           "eval.probe_every": "the study key probe_every (a sweep's probe for pruning)"}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; return it converted (int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _union(value, typing.get_args(tp), where)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            listed = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"
            raise ConfigError(f"{where}={value!r} must be {listed}")
        return value
    if origin is tuple:
        return _tuple(value, typing.get_args(tp), where)
    if tp is Any:
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp in _SCALARS:
        return _SCALARS[tp](value, where)
    raise ConfigError(f"{where}: unsupported type {tp}")


def _union(value: Any, args: tuple, where: str) -> Any:
    """`X | None` and the like: the first member that takes the value; else the first's error."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, where)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")


def _tuple(value: Any, args: tuple, where: str) -> tuple:
    """tuple[str, ...] (any length) or tuple[float, float] (fixed), from a YAML list."""
    if args[-1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0]
        # Class names may be written as numbers (classes: [0, 1, 2]): they name the labels' text.
        return tuple(_coerce(str(v) if item is str and isinstance(v, int) and not isinstance(v, bool) else v,
                             item, where) for v in value)
    if not isinstance(value, (list, tuple)) or len(value) != len(args):
        raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
    return tuple(_coerce(v, a, where) for v, a in zip(value, args))


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _float(value: Any, where: str) -> float:
    if isinstance(value, str):
        # PyYAML reads `1e-3` (no dot) as a string; accept any float literal.
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {bool: _bool, int: _int, float: _float, str: _str}


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        if key in RENAMED:
            raise ConfigError(f"'{key}' is now {RENAMED[key]} (one scalar each, so that a study can search them)")
        raise ConfigError(f"unknown key '{key}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in raw.items():
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
        else:
            kwargs[name] = _coerce(value, tp, key)
    return cls(**kwargs)


def load_dataclass(cls: type, raw: dict[str, Any] | None, source: str) -> Any:
    """`cls` (a dataclass tree) from a nested dict with every key and type checked, as for the
    Config tree; errors are one line prefixed with `source` (used for study files too)."""
    try:
        return _build(cls, raw or {}, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a checked Config from a nested dict; errors are prefixed with `source`."""
    try:
        cfg = _build(Config, raw or {}, "")
        validate(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    if cfg.model.in_channels is None and cfg.data.dataset in FIXED_CHANNELS:
        cfg.model.in_channels = FIXED_CHANNELS[cfg.data.dataset]
    return cfg



def set_key(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b=value` in a nested dict (creating sections), for overrides and sweeps."""
    parts = dotted.split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"'{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """`["optim.lr=0.01", "model.weights=null"]` -> [("optim.lr", 0.01), ...] (YAML values)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:  # a !!python tag, an unclosed bracket: one line
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
        out.append((key.strip(), value))
    return out


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return raw


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    """Read YAML `path` (or defaults when None), apply `section.key=value` overrides, check.
    A study file (sweeps/, recognised by its top-level `base:`) gives its base config, so that
    `check-data` or `pretrain` take the file a sweep runs on."""
    raw = read_yaml(path) if path is not None else {}
    if "base" in raw and not set(raw) & {f.name for f in dataclasses.fields(Config)}:
        base = raw["base"] if raw["base"] is not None else {}
        if not isinstance(base, dict):
            raise ConfigError(f"{path}: 'base' must be a mapping of config sections, not {type(base).__name__}")
        raw = copy.deepcopy(base)
    for key, value in parse_overrides(list(overrides)):
        set_key(raw, key, value)
    return config_from_dict(raw, source=str(path) if path is not None else "--set")


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), suitable for YAML and MLflow."""

    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(dataclasses.asdict(cfg))


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{'optim.lr': 0.3} -> {'optim': {'lr': 0.3}}: the inverse of flatten, for stored configs."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        set_key(out, key, value)
    return out


def flatten(cfg: Config) -> dict[str, Any]:
    """{'optim.lr': 0.3, ...}: every leaf with its dotted key."""
    out: dict[str, Any] = {}
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            out[f"{section}.{key}"] = value
    return out


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    atomic_write(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
