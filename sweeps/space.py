"""The search space of a study file: each `search:` entry (a float or int range, a choice, or a
range per choice of an earlier entry: `by`) as a Dimension that suggests its value to an
Optuna trial and is checked, with its extremes, before the study starts."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from vicreg.config import ConfigError


@dataclass
class Dimension:
    key: str  # dotted config key, e.g. "optim.lr"
    kind: str  # float | int | choice | by
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)
    by: str | None = None  # kind "by": the key whose value picks the case
    cases: dict[Any, Dimension] = field(default_factory=dict)
    name: str | None = None  # Optuna's parameter name (default: key)

    def suggest(self, trial: optuna.Trial, values: dict[str, Any] | None = None) -> Any:
        """This entry's value for the trial; `values` holds the entries suggested before it."""
        name = self.name or self.key
        if self.kind == "by":
            return self.cases[(values or {})[self.by]].suggest(trial)
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(name, self.choices)

    def described(self) -> object:
        """The entry as logged on the study's parent run: [low, high], the choices, or one per case."""
        if self.kind == "by":
            return {str(c): sub.described() for c, sub in self.cases.items()}
        return self.choices or [self.low, self.high]

    def extremes(self) -> list[tuple[dict[str, Any], Any]]:
        """(other keys fixed, value) pairs to check against the config's types before the study starts."""
        if self.kind == "by":
            return [({self.by: case, **fixed}, v) for case, d in self.cases.items() for fixed, v in d.extremes()]
        if self.kind == "choice":
            return [({}, c) for c in self.choices]
        cast = float if self.kind == "float" else int
        return [({}, cast(self.low)), ({}, cast(self.high))]


def config_values(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's Optuna params under their config keys: {'optim.lr[adam]': 1e-3} -> {'optim.lr': 1e-3}."""
    return {key.split("[", 1)[0]: value for key, value in params.items()}


def suggest_all(trial: optuna.Trial, search: list[Dimension]) -> dict[str, Any]:
    """{config key: value} for every search entry, in file order (a `by` entry sees its key)."""
    values: dict[str, Any] = {}
    for d in search:
        values[d.key] = d.suggest(trial, values)
    return values


def parse_dimension(path: Path, key: str, spec: Any, earlier: dict[str, Dimension] | None = None) -> Dimension:
    """One `search:` entry -> Dimension; any problem is a ConfigError naming the file and entry.
    `earlier`: the entries above it, which a `by` entry refers to."""
    where = f"{path}: search entry '{key}'"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping like {{float: [lo, hi]}} or {{choice: [...]}}")
    if "by" in spec:
        return _by(path, key, spec, earlier or {}, where)
    kinds = [k for k in ("float", "int", "choice") if k in spec]
    extra = set(spec) - {"float", "int", "choice", "log", "step"}
    if len(kinds) != 1 or extra:
        raise ConfigError(f"{where}: needs exactly one of float/int/choice (plus log/step), got {sorted(spec)}")
    kind = kinds[0]
    if kind == "choice":
        choices = spec["choice"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choice needs a non-empty list")
        if len({repr(c) for c in choices}) != len(choices):
            raise ConfigError(f"{where}: choice has duplicates")
        return Dimension(key, "choice", choices=choices)
    return _range(key, kind, spec, where)


def _by(path: Path, key: str, spec: dict, earlier: dict[str, Dimension], where: str) -> Dimension:
    """`key: {by: other, case: {float: [...]}, ...}`: a range per choice of an earlier entry."""
    by = spec["by"]
    parent = earlier.get(by)
    if parent is None or parent.kind != "choice":
        raise ConfigError(f"{where}: 'by: {by}' must name a choice entry of the search")
    cases = {c: v for c, v in spec.items() if c != "by"}
    if set(cases) != set(parent.choices):
        raise ConfigError(f"{where}: needs one range for each choice of {by} "
                          f"({', '.join(map(str, parent.choices))}), got {', '.join(map(str, cases))}")
    subs = {}
    for case, sub in cases.items():
        d = parse_dimension(path, f"{key}[{case}]", sub)
        if d.kind == "by":
            raise ConfigError(f"{where}: a 'by' entry cannot nest another")
        subs[case] = dataclasses.replace(d, key=key, name=f"{key}[{case}]")
    return Dimension(key, "by", by=by, cases=subs)


def _range(key: str, kind: str, spec: dict, where: str) -> Dimension:
    """`{float: [low, high]}` or `{int: [...]}`, with `log` or `step`."""
    bounds = spec[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise ConfigError(f"{where}: {kind} needs [low, high]")
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: bounds must be numbers, got {bounds}") from None
    if kind == "int" and (low != int(low) or high != int(high)):
        raise ConfigError(f"{where}: int bounds must be integers, got {bounds}")
    if not low < high:
        raise ConfigError(f"{where}: empty range [{bounds[0]}, {bounds[1]}] (need low < high)")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {bounds[0]}")
    step = spec.get("step")
    if step is not None and (log or not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"{where}: step must be a positive number and cannot be combined with log")
    return Dimension(key, kind, low, high, log, step)
