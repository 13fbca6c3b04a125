"""Study files (`experiments/<study>.yaml`): base config, search space, objective, budget.

A study file is checked completely before any work starts; each error is one line
naming the file and the entry. Example:

    name: demo
    base: {data: {...}, model: {...}, ...}        # the trainer's config tree
    search:
      optim.lr: {float: [1.0e-4, 0.1], log: true}
      data.batch_size: {choice: [16, 32, 64]}
      model.expander_hidden: {int: [64, 512], step: 64}
      optim.lr: {by: optim.name, lars: {float: [0.05, 1.0], log: true}, adam: {float: [1e-4, 1e-2], log: true}}
    objective: {metric: kappa_mean, direction: maximize}
    sampler: {name: tpe, seed: 0}
    pruner: {name: hyperband, min_resource: 1}
    budget: {trials: 8, timeout_s: null, epochs: 3}
    confirm: {top_k: 2, seeds: 3}                   # re-pretrain the best configs with N seeds

A `by` entry is conditional (Optuna's define-by-run): its range depends on the value another
(choice) entry took in the same trial, which is sampled first. Optuna records it as `optim.lr[adam]`, so
each optimiser's learning rates form their own distribution for the sampler; the trainer
config and MLflow get the sampled value under `optim.lr`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna

from vicreg.config import (
    Config,
    ConfigError,
    config_from_dict,
    get_key,
    load_dataclass,
    primary_metric,
    read_yaml,
    set_key,
)
from vicreg.errors import first_line

from .space import Dimension, parse_dimension

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"


# Allowed names, declared once: the typed loader checks them (vicreg.config.load_dataclass).
Metric = Literal["kappa_mean", "f1_mean", "accuracy_mean", "auc_mean", "probe_kappa", "probe_f1"]
Direction = Literal["maximize", "minimize"]
# No cmaes: Optuna's CmaEsSampler unpickles trial system attributes from the storage, so write
# access to a shared database would run code on every worker (and `cmaes` is not installed).
SamplerName = Literal["tpe", "random", "grid", "qmc"]
PrunerName = Literal["hyperband", "median", "percentile", "successive_halving", "threshold", "none"]


@dataclass
class Objective:
    # null: the data's primary score, kappa_mean for graded labels, f1_mean for unordered
    # classes (data.ordinal; vicreg.config.primary_metric), filled in when the file is read.
    metric: Metric | None = None
    direction: Direction = "maximize"


@dataclass
class Budget:
    trials: int = 20  # finished (complete or pruned) trials wanted
    timeout_s: float | None = None  # no new trial after this many seconds
    epochs: int | None = None  # fixes train.epochs for every trial


@dataclass
class Sampler:
    name: SamplerName = "tpe"
    seed: int | None = 0  # + each worker's offset (sweeps/run.py: open_study)
    options: dict = field(default_factory=dict)  # the file's other keys, passed to Optuna's sampler


@dataclass
class Pruner:
    name: PrunerName = "hyperband"
    options: dict = field(default_factory=dict)  # the file's other keys, passed to Optuna's pruner


@dataclass
class Confirm:
    top_k: int = 3  # configurations re-pretrained from scratch when the study ends
    # seeds each (1000.., pretraining and head alike; the winner of several is quoted on 1500..):
    # 5, because with 3 the seed part of the hold-out interval has 2 degrees of freedom (t = 4.3)
    seeds: int = 5


@dataclass
class StudyFile:
    """A study file's keys and types (`base` and `search` are checked by their own rules)."""

    name: str | None = None
    description: str = ""
    base: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    objective: Objective = field(default_factory=Objective)
    sampler: Sampler = field(default_factory=Sampler)
    pruner: Pruner = field(default_factory=Pruner)
    budget: Budget = field(default_factory=Budget)
    confirm: Confirm = field(default_factory=Confirm)
    probe_every: int = 1
    # The pruning probe scores at most this many CV images, a fixed stratified subset (0: all):
    # one encoder pass over 4,000 images per probe keeps it a small part of an epoch on large sets.
    probe_max_images: int = 4000
    best_file_trials: int = 5  # the top trials (by CV) listed in the best-configurations file
    max_consecutive_failures: int = 3
    log_checkpoint: bool = True
    log_plots: bool = True  # loss-terms, confusion and curve PNGs per run (~1 s each), Optuna's on the parent (2 s)
    system_metrics_interval_s: float = 10.0  # MLflow's CPU/memory/GPU monitor on every run (0: off)
    checkpoint_every: int = 1  # epochs between a trial's checkpoints (a retried trial resumes there)
    keep_checkpoints: bool = False  # keep a trial's checkpoints after it completes or is pruned


@dataclass
class StudySpec(StudyFile):
    """A loaded study: the file's settings (StudyFile), where it came from, and its search
    space parsed into Dimensions (`by` entries after the entry they depend on). Not an
    optuna.Study, which is the study's state in the storage."""

    name: str = ""
    search: list[Dimension] = field(default_factory=list)  # the file's mapping, parsed
    path: Path = field(default_factory=Path)

    def config(self, values: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
        """Resolved trainer config: base + budget epochs + sampled values + run overrides."""
        raw = copy.deepcopy(self.base)
        if self.budget.epochs is not None:
            set_key(raw, "train.epochs", self.budget.epochs)
        for key, value in {**values, **(overrides or {})}.items():
            set_key(raw, key, value)
        return config_from_dict(raw, source=f"{self.path} (trial config)")

    @property
    def max_epochs(self) -> int:
        """The epoch budget of one trial: budget.epochs, else the top of a searched train.epochs,
        else the base config's train.epochs."""
        if self.budget.epochs is not None:
            return self.budget.epochs
        for d in self.search:
            if d.key == "train.epochs":
                return int(max(d.choices) if d.kind == "choice" else d.high)
        return self.config({}).train.epochs

    def values_of(self, key: str, overrides: dict[str, Any] | None = None) -> list[Any]:
        """Every value `key` can take in a trial: its search choices, else its fixed value."""
        for d in self.search:
            if d.key == key and d.kind == "choice":
                return list(d.choices)
        return [get_key(self.config({}, overrides), key)]

    def fixed(self, overrides: dict[str, Any]) -> tuple[StudySpec, list[str]]:
        """This study with the search entries that `--set` fixes taken out (a `by` entry whose
        choice is fixed becomes that case's range); returns it and the keys taken out. The
        --set values are checked like the study file's."""
        self.config({}, overrides)
        search, dropped = [], []
        for d in self.search:
            if d.key in overrides:
                dropped.append(d.key)
            elif d.kind == "by" and d.by in overrides:
                case = overrides[d.by]
                if case not in d.cases:
                    raise ConfigError(f"--set {d.by}={case}: {self.path} has no '{d.key}' range for it "
                                      f"(it has {', '.join(map(str, d.cases))})")
                search.append(d.cases[case])
            else:
                search.append(d)
        if not search:
            raise ConfigError(f"--set fixes every search entry of {self.path}; leave at least one to search")
        return dataclasses.replace(self, search=search), dropped

    def make_sampler(self, offset: int = 0) -> optuna.samplers.BaseSampler:
        """The study's sampler with seed + offset (each worker its own offset: sweeps/run.py)."""
        name, s = self.sampler.name, self.sampler.options
        seed = None if self.sampler.seed is None else self.sampler.seed + offset
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **s)
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed, **s)  # an unknown option is a TypeError at load
        if name == "grid":
            space = {sub.name or sub.key: sub.choices for d in self.search
                     for sub in (d.cases.values() if d.kind == "by" else [d])}
            return optuna.samplers.GridSampler(space, seed=seed, **s)
        return optuna.samplers.QMCSampler(seed=seed, **s)

    def make_pruner(self) -> optuna.pruners.BasePruner:
        name, p = self.pruner.name, dict(self.pruner.options)
        if name == "hyperband":
            # Hyperband's brackets span the epochs a trial really runs, not Optuna's "auto"
            # guess from the first finished trials.
            p.setdefault("max_resource", self.max_epochs)
            return optuna.pruners.HyperbandPruner(**p)
        if name == "median":
            return optuna.pruners.MedianPruner(**p)
        if name == "percentile":
            return optuna.pruners.PercentilePruner(**p)
        if name == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(**p)
        if name == "threshold":
            return optuna.pruners.ThresholdPruner(**p)
        return optuna.pruners.NopPruner()


def _options(raw: dict[str, Any], section: str, typed: tuple[str, ...]) -> None:
    """sampler/pruner: the keys other than `typed` are the Optuna class's options."""
    value = raw.get(section)
    if isinstance(value, dict):
        raw[section] = {k: v for k, v in value.items() if k in typed} | {
            "options": {k: v for k, v in value.items() if k not in typed}}


def _search(path: Path, entries: dict[str, Any], base: dict[str, Any]) -> list[Dimension]:
    """The study file's `search:` mapping, parsed and checked: each key a config key, each value
    at its extremes (with the entry it depends on) making a valid config with `base`."""
    if not entries:
        raise ConfigError(f"{path}: 'search' must map config keys to distributions")
    defaults = Config()
    search: list[Dimension] = []
    # Conditional (`by`) entries after the rest, so that the entry they depend on is sampled first.
    ordered = sorted(entries.items(), key=lambda kv: isinstance(kv[1], dict) and "by" in kv[1])
    for key, spec in ordered:
        try:
            get_key(defaults, key)
            if "." not in key:
                raise AttributeError
        except AttributeError:
            raise ConfigError(f"{path}: search entry '{key}' is not a config key (like optim.lr)") from None
        dim = parse_dimension(path, key, spec, {d.key: d for d in search})
        for fixed, value in dim.extremes():  # every value must make a valid config
            trial_raw = copy.deepcopy(base)
            for k, v in {**fixed, key: value}.items():
                set_key(trial_raw, k, v)
            try:
                config_from_dict(trial_raw, source="")
            except ConfigError as e:
                raise ConfigError(f"{path}: search entry '{key}': value {value!r} is invalid ({e})") from None
        search.append(dim)
    return search


def load_study(path: str | Path) -> StudySpec:
    """Read and check a study file; any problem is a ConfigError naming the file and entry."""
    path = Path(path)
    raw = {k: v for k, v in read_yaml(path).items() if v is not None}  # `key:` alone = the default
    if "top_k" in raw:  # the name before 2026-12: it read like confirm.top_k
        raise ConfigError(f"{path}: 'top_k' is now 'best_file_trials' (the trials the best file lists; "
                          f"confirm.top_k is how many are pretrained again)")
    _options(raw, "sampler", ("name", "seed"))
    _options(raw, "pruner", ("name",))
    f: StudyFile = load_dataclass(StudyFile, raw, str(path))
    base = config_from_dict(copy.deepcopy(f.base), source=f"{path} (base)")  # checks every base key
    primary = primary_metric(base.data)
    if f.objective.metric is None:
        f.objective.metric = f"{primary}_mean"  # type: ignore[assignment]
    elif primary == "f1" and "kappa" in f.objective.metric:
        raise ConfigError(f"{path}: objective.metric={f.objective.metric} ranks unordered classes (data.ordinal "
                          f"false) by an order they do not have: use f1_mean (the default), probe_f1 or accuracy_mean")
    search = _search(path, f.search, f.base)
    checks = [
        (f.budget.trials >= 1, "budget.trials", "must be an integer >= 1"),
        (f.budget.epochs is None or f.budget.epochs >= 1, "budget.epochs", "must be an integer >= 1"),
        (f.sampler.name != "grid"
         or all(sub.kind == "choice" for d in search for sub in (d.cases.values() if d.kind == "by" else [d])),
         "sampler.name", "grid needs every search entry to be a choice"),
        (f.confirm.top_k >= 0 and 0 <= f.confirm.seeds < 500, "confirm", "top_k >= 0 and 0 <= seeds < 500"),
        (f.checkpoint_every >= 1, "checkpoint_every", "must be an integer >= 1 (epochs between a trial's checkpoints)"),
        (f.best_file_trials >= 1, "best_file_trials", "must be an integer >= 1"),
        (f.probe_max_images >= 0, "probe_max_images", "must be a number of images >= 0 (0: all)"),
        (f.system_metrics_interval_s >= 0, "system_metrics_interval_s", "must be a number of seconds >= 0 (0: off)"),
        ("train.epochs" not in f.search or f.budget.epochs is None, "budget.epochs",
         "fixes train.epochs, which the search also sets: keep one"),
    ]
    for ok, key, msg in checks:
        if not ok:
            raise ConfigError(f"{path}: {key} {msg}")
    name = f.name or path.stem
    if not STUDY_NAME.fullmatch(name):  # it names folders, files and MLflow filters
        raise ConfigError(f"{path}: name {name!r} must be letters, digits, '_', '.' or '-', starting with a "
                          f"letter or digit")
    for section, options in (("sampler", f.sampler.options), ("pruner", f.pruner.options)):
        _check_options(path, section, options)
    study = StudySpec(**{**vars(f), "name": name, "search": search, "path": path})
    try:  # building the pruner and sampler checks the rest of their options
        study.make_sampler()
        study.make_pruner()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: sampler/pruner options: {first_line(e)}") from None
    return study


STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Integer options of Optuna's samplers and pruners, with their least value: Optuna checks some
# only when a trial uses them (a string, or min_resource 0, failed every trial).
_INT_OPTIONS = {"n_startup_trials": 0, "n_warmup_steps": 0, "interval_steps": 1, "n_min_trials": 1,
                "min_resource": 1, "max_resource": 1, "reduction_factor": 2, "min_early_stopping_rate": 0,
                "n_ei_candidates": 1, "bootstrap_count": 0}


def _check_options(path: Path, section: str, options: dict[str, Any]) -> None:
    for key, value in options.items():
        low = _INT_OPTIONS.get(key)
        if low is None or (key in ("min_resource", "max_resource") and value == "auto"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{path}: {section}.{key}={value!r} must be an integer >= {low}")


def check_init(spec: StudySpec, overrides: dict[str, Any]) -> None:
    """A study that can start from ImageNet weights needs the file before any trial starts."""
    from vicreg.imagenet import init_weights

    cfg = spec.config({}, overrides)
    for init in spec.values_of("model.init", overrides):
        try:
            init_weights(dataclasses.replace(cfg.model, init=init))
        except ConfigError as e:
            hint = "; or --set model.init=random to search without it" if len(spec.values_of("model.init")) > 1 else ""
            raise ConfigError(f"{spec.path}: {e}{hint}") from None


def study_path(name: str) -> Path:
    path = EXPERIMENTS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
        raise ConfigError(f"no study '{name}' in {EXPERIMENTS_DIR} (known: {', '.join(known)})")
    return path
