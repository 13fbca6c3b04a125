"""Files that hold weights, written and read as weights only: a file we read never runs code.

Every weights file of the project (pretraining and trial checkpoints, confirm-stage encoders,
a sweep run's `checkpoint/encoder.pt`, the registry model's weights) is `torch.save` of plain
data: tensors, dicts, lists, tuples, strings, numbers, booleans and None. It is read with
`torch.load(weights_only=True)`, whose unpickler rebuilds only those and refuses any class or
function named in the file (torch's default since 2.6; torch.serialization docs), so a crafted file
cannot run code, whoever wrote it. We chose this over safetensors because a checkpoint also
holds the optimizer state, the epoch history and the resolved config, which are plain data
too: one file, one reader, and no further dependency.

A file written by an earlier version that needs full unpickling (a class or a numpy scalar
inside) is refused with one line naming every Python object the file names and the command
that converts it; `convert` is that command's body. Even with --trust it rebuilds only a
fixed allow-list (ALLOWED: numpy scalars, dtypes and arrays, paths, OrderedDict and this
project's config dataclasses, none of which runs code it is given); a file that names
anything else (builtins.exec, cProfile.run, ...) is refused with all its names. The names are
read statically from the pickle's opcodes (pickletools), for the zip and the legacy format
alike, before anything is imported. A malformed file (empty, truncated, not a torch file,
wrong keys, another architecture, other shapes) is one line too.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import os
import pickle
import pickletools
import re
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import config
from .errors import CheckpointError, UnsafeCheckpoint, first_line
from .imagenet import uses_small_stem
from .io import atomic_write
from .model import build_encoder

CONVERT = "vicreg convert-checkpoint --trust"
# What `convert --trust` may rebuild beyond torch's own weights-only set: objects whose
# construction runs no code taken from the file.
ALLOWED = frozenset({
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype", "collections.OrderedDict",
    "_codecs.encode", "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePath",
    "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    *(f"vicreg.config.{n}" for n, v in vars(config).items() if isinstance(v, type) and dataclasses.is_dataclass(v)),
})
_DTYPE = re.compile(r"numpy\.dtypes\.\w+DType")


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """torch.save of plain data (module docstring), atomically: never half a file."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A weights file -> its dict, unpickling nothing but plain data. FileNotFoundError when
    missing; UnsafeCheckpoint for a file that needs full unpickling; CheckpointError for any
    other file that is not a readable torch dict."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p} does not exist")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: the file is empty")
    try:
        state = torch.load(p, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        named = _named_global(str(e))
        unsafe = file_globals(p) or ([named] if named else [])
        if unsafe:
            refused = [n for n in unsafe if not allowed(n)]
            fix = (f"it cannot be converted: {', '.join(refused)} {'is' if len(refused) == 1 else 'are'} not plain "
                   f"data, and rebuilding them can run code" if refused else
                   f"if you trust the file, convert it once: {CONVERT} {p}")
            raise UnsafeCheckpoint(
                f"{p}: refused: it names Python objects that only full unpickling would rebuild "
                f"({_listed(unsafe)}); {fix}") from None
        raise CheckpointError(f"{p}: unreadable, truncated or not a torch file (its content is not plain "
                              f"data)") from None
    except Exception as e:  # truncated, not a zip, not torch: all the same user error
        raise CheckpointError(f"{p}: unreadable, truncated or not a torch file ({type(e).__name__}: "
                              f"{first_line(e, 200, sentence=True)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{p}: holds a {type(state).__name__}, not a dict of weights")
    return state


def load_weights(module: nn.Module, weights: dict[str, torch.Tensor], path: str | os.PathLike,
                 what: str = "encoder") -> None:
    """module.load_state_dict(weights), strictly; a mismatch is one line: how many keys are
    missing, unexpected or of another shape, with one example each."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: the {what} weights are not a dict of tensors")
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k!r}: {tuple(weights[k].shape)} in the file, "
                         f"{tuple(own[k].shape)} in the {what})")
        raise CheckpointError(f"{path}: the weights do not fit this {what}: " + ", ".join(parts)
                              + "; was it written for another architecture or config?")
    module.load_state_dict(weights)


def convert(path: str | os.PathLike) -> tuple[Path, list[str]]:
    """Rewrite a trusted file that needs more than plain data as plain data (the original kept
    as `<name>.pickled`), with torch's weights-only unpickler and the globals the file names
    allowed, only when every one of them is on ALLOWED; anything else is refused with every
    name, before any is imported. Returns (backup path, the globals)."""
    p = Path(path)
    names = file_globals(p)
    refused = [n for n in names if not allowed(n)]
    if refused:
        raise UnsafeCheckpoint(f"{p}: refused even with --trust: it names {_listed(refused)}, which "
                               f"{'is' if len(refused) == 1 else 'are'} not plain data (rebuilding "
                               f"{'it' if len(refused) == 1 else 'them'} can run code); only "
                               f"numpy values, paths and config dataclasses are converted")
    extra = [n for n in names if not n.startswith("torch.")]  # torch's own: its unpickler's rules
    objs = [_resolve(n, p) for n in extra]
    if any(n.startswith("numpy.") for n in extra):  # numpy.dtype(...) builds its DType class inside
        objs += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    with torch.serialization.safe_globals(objs):
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            why = first_line(e, 200, sentence=True)
            raise CheckpointError(f"{p}: cannot be converted ({type(e).__name__}: {why})") from None
    plain = _plain(state, "")
    backup = p.with_name(p.name + ".pickled")
    os.replace(p, backup)
    save(p, plain)
    load(p)  # it reads as weights only now
    return backup, extra


def allowed(name: str) -> bool:
    """Whether `convert --trust` may rebuild this global (ALLOWED, numpy's dtype classes,
    torch's own, which its weights-only unpickler then judges)."""
    return name in ALLOWED or bool(_DTYPE.fullmatch(name)) or name.startswith("torch.")


def file_globals(path: str | os.PathLike) -> list[str]:
    """Every 'module.name' a torch file's pickles name (GLOBAL, INST, and STACK_GLOBAL with
    the two strings before it), read from the opcodes without unpickling: the zip format's
    data.pkl, or the legacy format's pickles one after another. A STACK_GLOBAL whose strings
    cannot be followed is named '<hidden>' (so it is refused). [] when nothing is readable."""
    p = Path(path)
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as z:
                pkl = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                streams = [z.read(pkl)] if pkl else []
        else:
            streams = [p.read_bytes()]
    except (OSError, zipfile.BadZipFile, KeyError):
        return []
    names: list[str] = []
    for data in streams:
        f = io.BytesIO(data)
        for _ in range(5):  # legacy: magic, protocol, sys info, the object, storage keys (then raw bytes)
            try:
                names += _opcode_globals(f)
            except Exception:  # the raw storage bytes, or a damaged stream: what was read stands
                break
    return list(dict.fromkeys(names))


def _opcode_globals(f: io.BytesIO) -> list[str]:
    """The globals of one pickle read from `f` up to its STOP (pickletools.genops)."""
    out: list[str] = []
    strings: list[str | None] = []  # what each push put on the stack, if it was a string
    memo: dict[int, str | None] = {}
    for op, arg, _ in pickletools.genops(f):
        if op.name in ("GLOBAL", "INST"):
            out.append(str(arg).replace(" ", "."))
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                         "BINSTRING", "STRING"):
            strings.append(str(arg))
        elif op.name == "MEMOIZE":
            memo[len(memo)] = strings[-1] if strings else None
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = strings[-1] if strings else None
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            strings.append(memo.get(int(arg)))
        elif op.name == "STACK_GLOBAL":
            module, name = (strings[-2], strings[-1]) if len(strings) >= 2 else (None, None)
            out.append(f"{module}.{name}" if module and name else "<hidden>")
            strings.append(None)
        elif op.name not in ("PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK"):
            strings.append(None)  # any other push hides the strings below it from STACK_GLOBAL
    return out


def _listed(names: list[str], most: int = 20) -> str:
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more ({len(names)} in all)"


def _resolve(name: str, p: Path) -> Any:
    """'numpy.core.multiarray._reconstruct' -> that object (the longest importable module prefix);
    called only for allowed names."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            return obj
        except AttributeError:
            break
    raise CheckpointError(f"{p}: names {name}, which is not installed here; it cannot be converted")


def _plain(obj: Any, where: str) -> Any:
    """`obj` as plain data: numpy scalars and arrays, dataclasses and paths become numbers,
    tensors, dicts and strings; anything else is a CheckpointError naming where it sits."""
    if isinstance(obj, np.generic):  # first: np.float64 is also a float
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj)
    if isinstance(obj, os.PathLike):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj), where)
    if isinstance(obj, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise CheckpointError(f"cannot convert {type(obj).__name__} at {where or 'the top'} to plain data")


def _named_global(message: str) -> str | None:
    """The object torch's weights-only unpickler refused, from its error text (the only place
    torch says which; used by `convert` and for the refusal line of a legacy-format file)."""
    m = re.search(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>", message)
    return None if m is None else (m.group(1) or m.group(2))


# --- the trainer's checkpoints ------------------------------------------------------

CHECKPOINT_KEYS = ("key", "model", "optimizer", "epoch", "step", "best", "wait", "history")


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any] | None:
    """`pretrain`'s checkpoint at `path` (read as weights only, `load`), or None
    when there is none. One that cannot be used (cut short, overwritten, written by another
    tool, or needing full unpickling) is moved aside to `<name>.corrupt-<time>` with one
    warning saying why, and None is returned: the run then starts from scratch instead of
    stopping with a traceback, and nothing in the file ran."""
    if not path.is_file():
        return None
    try:
        state = load(path, device)
        missing = [k for k in CHECKPOINT_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"{path}: not a pretraining checkpoint (no {missing[0]!r})")
        return state
    except CheckpointError as e:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(aside)
        warnings.warn(f"{e} (moved to {aside.name}; starting from scratch)", stacklevel=3)
        return None


def load_encoder_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Any], torch.nn.Module]:
    """A checkpoint -> (its config dict, the encoder with its weights, on CPU). Reads both what
    `pretrain` writes (`last.pt`: the whole model) and what a sweep run logs as an MLflow
    artifact (`checkpoint/encoder.pt`: the encoder and the flattened config), as weights only;
    a malformed or unsafe file is one line."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    return encoder_from_state(load(p), p)


def encoder_from_state(state: dict[str, Any], p: Path) -> tuple[dict[str, Any], torch.nn.Module]:
    """load_encoder_checkpoint's work on an already loaded file `p`: (config dict, encoder)."""
    if isinstance(state.get("encoder"), dict) and isinstance(state.get("config"), dict):  # a sweep run's artifact
        raw, weights = config.unflatten(state["config"]), state["encoder"]
    elif isinstance(state.get("model"), dict) and isinstance(state.get("config"), dict):  # pretrain's last.pt
        raw = state["config"]
        weights = {k.removeprefix("encoder."): v for k, v in state["model"].items() if k.startswith("encoder.")}
    else:
        raise CheckpointError(
            f"{p}: not a VICReg checkpoint: expected 'model' and 'config' (pretrain's last.pt) or 'encoder' and "
            f"'config' (a sweep run's checkpoint/encoder.pt); found {', '.join(map(repr, list(state)[:5])) or 'none'}")
    cfg = config.config_from_dict(raw, source=str(p))
    # Every weight comes from the checkpoint: build the same network (the stem it was trained
    # with) without reading the ImageNet file it once started from, which may not be here.
    stem = uses_small_stem(cfg.model, cfg.data.image_size) if cfg.model.small_stem is None else cfg.model.small_stem
    encoder = build_encoder(dataclasses.replace(cfg.model, init="random", weights=None, small_stem=stem),
                            cfg.data.image_size)
    load_weights(encoder, weights, p)
    return raw, encoder.eval()
