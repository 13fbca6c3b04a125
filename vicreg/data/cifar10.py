"""CIFAR-10 from the `cifar-10-batches-py` folder torchvision reads (never downloaded), read by
a pickle reader that admits only what the format holds, so a crafted batch runs no code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import DataConfig
from ..errors import DataError
from ..io import digest
from .sets import Datasets, ImageSet, data_root


def _cifar_dir(root: Path) -> Path:
    d = root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"
    need = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in need if not (d / n).is_file()]
    if missing:
        raise DataError(f"{d}: CIFAR-10 not found (missing {', '.join(missing)}); put the "
                        f"extracted 'cifar-10-batches-py' folder (data_batch_1..5, test_batch) "
                        f"there, as torchvision's CIFAR10 reads it; it is never downloaded")
    return d


def _numpy_reconstruct() -> Any:
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
    return core.multiarray._reconstruct


class CifarUnpickler(pickle.Unpickler):
    """Reads a CIFAR-10 python batch, a pickle by format, with only what the format holds (as
    torch.load(weights_only=True) does for checkpoints): dicts, lists, strings, bytes, numbers and
    numpy arrays. Any other class or function the file names is refused before it is called, so
    a crafted batch runs no code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused: it names {module}.{name}, which a CIFAR-10 batch never holds "
                                         f"(reading it could run code)")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return super().find_class(module, name)


def _read_cifar_batches(d: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for n in names:
        with open(d / n, "rb") as f:
            try:
                batch = CifarUnpickler(f, encoding="latin1").load()
                if not isinstance(batch, dict) or "data" not in batch or "labels" not in batch:
                    raise ValueError("no 'data' and 'labels'")
            except pickle.UnpicklingError as e:
                raise DataError(f"{d / n}: {e}") from None
            except Exception as e:  # truncated, not a pickle, other keys: one line
                raise DataError(f"{d / n}: not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
        data, labels = batch["data"], batch["labels"]
        _check_cifar_batch(d / n, data, labels)
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(labels, dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _check_cifar_batch(path: Path, data: Any, labels: Any) -> None:
    """The format's shapes before any array is built from them: `data` a uint8 ndarray
    (N, 3072), `labels` N integers in 0..9. A crafted batch of nested shared lists took 7 GB
    when turned into an array; now it is one line."""
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), not a {type(data).__name__}"
                        + (f" of shape {shape} and dtype {data.dtype}" if shape is not None else ""))
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != data.shape[0]:
        got = len(labels) if isinstance(labels, (list, np.ndarray)) else type(labels).__name__
        raise DataError(f"{path}: 'labels' must be {data.shape[0]} integers (one per image), got {got}")
    for i, v in enumerate(labels):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 9:
            what = repr(v)[:40] if isinstance(v, (int, np.integer, str)) else f"a {type(v).__name__}"
            raise DataError(f"{path}: 'labels' must be integers in 0..9; label {i} is {what}")


def load_cifar10(cfg: DataConfig) -> Datasets:
    d = _cifar_dir(data_root(cfg))
    sets = []
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        x, y = _read_cifar_batches(d, names)
        t = torch.from_numpy(x)
        if cfg.image_size != 32:
            t = torch.nn.functional.interpolate(t.float(), size=cfg.image_size, mode="bilinear",
                                                antialias=True).round().clamp(0, 255).to(torch.uint8)
        sets.append(ImageSet(t, y, [f"{split}-{i:05d}" for i in range(len(y))], "cifar10",
                             digest=digest(t), source=str(d.resolve())))
    return Datasets(*sets)
