"""Files that hold weights, written and read as weights only: a file we read never runs code.

Every weights file of the project (pretraining and trial checkpoints, confirm-stage encoders,
a sweep run's `checkpoint/encoder.pt`, the registry model's weights) is `torch.save` of plain
data: tensors, dicts, lists, tuples, strings, numbers, booleans and None. It is read with
`torch.load(weights_only=True)`, whose unpickler rebuilds only those and refuses any class or
function named in the file (REFERENCE 11; torch's default since 2.6), so a crafted file
cannot run code, whoever wrote it. We chose this over safetensors because a checkpoint also
holds the optimizer state, the epoch history and the resolved config, which are plain data
too: one file, one reader, and no further dependency.

A file written by an earlier version that needs full unpickling (a class or a numpy scalar
inside) is refused with one line naming the command that converts it; `convert` is that
command's body, run only by a user who says they trust the file. A malformed file (empty,
truncated, not a torch file, wrong keys, another architecture, other shapes) is one line too.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import CheckpointError, UnsafeCheckpoint
from .io import atomic_write

CONVERT = "python -m vicreg convert-checkpoint --trust"


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
        unsafe = _unsafe_globals(p) or ([named] if named else [])
        if unsafe:
            raise UnsafeCheckpoint(
                f"{p}: refused: it names Python objects ({', '.join(unsafe[:3])}) that only full unpickling "
                f"would rebuild, and unpickling can run code. If you trust the file, convert it once: "
                f"{CONVERT} {p}") from None
        raise CheckpointError(f"{p}: unreadable, truncated or not a torch file (its content is not plain "
                              f"data)") from None
    except Exception as e:  # truncated, not a zip, not torch: all the same user error
        raise CheckpointError(f"{p}: unreadable, truncated or not a torch file ({type(e).__name__}: "
                              f"{_first_line(e)})") from None
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
    as `<name>.pickled`). Still torch's weights-only unpickler, with exactly the globals the
    file names allowed (torch.serialization.safe_globals): those are called with the file's
    arguments, which is why the command asks for --trust. Returns (backup path, the globals)."""
    p = Path(path)
    names = _unsafe_globals(p)
    for _ in range(20):  # numpy's dtype classes are built inside the file: torch names them one at a time
        with torch.serialization.safe_globals([_resolve(n, p) for n in names]):
            try:
                state = torch.load(p, map_location="cpu", weights_only=True)
                break
            except pickle.UnpicklingError as e:
                more = _named_global(str(e))
                if more is None or more in names:
                    raise CheckpointError(f"{p}: cannot be converted ({_first_line(e)})") from None
                names.append(more)
    else:
        raise CheckpointError(f"{p}: cannot be converted (it names more than {len(names)} Python objects)")
    plain = _plain(state, "")
    backup = p.with_name(p.name + ".pickled")
    os.replace(p, backup)
    save(p, plain)
    load(p)  # it reads as weights only now
    return backup, names


def _resolve(name: str, p: Path) -> Any:
    """'numpy.core.multiarray._reconstruct' -> that object (the longest importable module prefix)."""
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


def _unsafe_globals(p: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(p))
    except Exception:  # not a zip checkpoint: the caller says it is not a weights file
        return []


def _first_line(e: BaseException) -> str:
    """The exception's first sentence (torch's messages run on for lines)."""
    return (str(e).strip().splitlines() or [""])[0].split(". ")[0][:200]
