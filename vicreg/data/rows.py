"""Where pretraining's batches come from: the set copied to the device once, or streamed from
the memory-mapped decode cache a batch at a time.

`Rows` is a set of images (N, C, H, W) uint8 held as rows of one or more arrays (the cache's
memory maps: labelled CV images, unlabelled, test), read where they lie: a selection is an
index, never a copy. `placement` decides, from `data.on_device`, whether the set goes to the
device; `epoch_batches` yields one epoch's batches either way, in the same order, so the two
paths train on the same pixels for the same seed (bit-identical losses on the CPU).

Streaming to a GPU gathers batch i+1 into pinned host memory on a background thread while step
i runs, and copies it with non_blocking, so the step does not wait on the host. On the CPU the
batch is gathered in the loop: there is no copy to overlap, and the step uses every core.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from queue import Queue

import numpy as np
import torch

# auto puts the set on the device when it takes at most this share of the device memory that
# one worker may use (the GPU's memory / workers sharing it, --per-gpu): the rest is for the
# model, its activations at the batch size, and the optimiser.
DEVICE_SHARE = 0.5


@dataclass(frozen=True)
class Rows:
    """Images (N, C, H, W), uint8 (or any rows: features (N, F) too): the rows `index` (or all,
    None) of each tensor in `parts`, concatenated in order. The tensors are usually memory maps
    (torch.from_numpy of np.load with mmap_mode), so holding a Rows costs the index arrays only."""

    parts: tuple[tuple[torch.Tensor, np.ndarray | None], ...]

    @staticmethod
    def of(*parts: torch.Tensor | tuple[torch.Tensor, np.ndarray | None]) -> Rows:
        return Rows(tuple(p if isinstance(p, tuple) else (p, None) for p in parts))

    def __len__(self) -> int:
        return sum(len(t) if ix is None else len(ix) for t, ix in self.parts)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), *self.parts[0][0].shape[1:])  # type: ignore[return-value]

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0][0].dtype

    @property
    def ndim(self) -> int:
        return self.parts[0][0].ndim

    @property
    def nbytes(self) -> int:
        n, c, h, w = self.shape
        return n * c * h * w * self.dtype.itemsize

    def gather(self, idx: torch.Tensor | np.ndarray, out: torch.Tensor | None = None) -> torch.Tensor:
        """The images at positions `idx` (B,) -> uint8 (B, C, H, W), in `idx`'s order, written
        into `out` (e.g. a pinned buffer) when given. Reads only those rows of the maps."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        if out is None:
            out = torch.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        start = 0
        for t, ix in self.parts:
            n = len(t) if ix is None else len(ix)
            inside = (idx >= start) & (idx < start + n)
            if len(self.parts) == 1 or bool(inside.all()):
                local = idx - start
                rows = local if ix is None else torch.from_numpy(ix)[local]
                torch.index_select(t, 0, rows, out=out)
                return out
            where = torch.nonzero(inside).flatten()
            if len(where):
                local = idx[where] - start
                rows = local if ix is None else torch.from_numpy(ix)[local]
                out[where] = t[rows]
            start += n
        return out

    def __getitem__(self, key: slice | torch.Tensor | np.ndarray) -> torch.Tensor:
        """rows[a:b] or rows[idx]: those images as a tensor (what indexing a tensor gives)."""
        if isinstance(key, slice):
            return self.gather(torch.arange(*key.indices(len(self))))
        return self.gather(key)

    def chunks(self, size: int = 1024) -> Iterator[torch.Tensor]:
        """The images in order, `size` at a time (uint8 (<=size, C, H, W)): memory is one chunk."""
        for i in range(0, len(self), size):
            yield self.gather(torch.arange(i, min(i + size, len(self))))

    def materialise(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """One contiguous tensor of every row on `device` (a copy of the set: only where it
        fits), filled a chunk at a time: host memory holds one chunk, not a second set."""
        out = torch.empty(self.shape, dtype=self.dtype, device=device)
        for i, chunk in enumerate(self.chunks()):
            out[i * 1024:i * 1024 + len(chunk)] = chunk.to(device)
        return out


def as_rows(images: torch.Tensor | Rows) -> Rows:
    return images if isinstance(images, Rows) else Rows.of(images)


def take(images: torch.Tensor | Rows, idx: np.ndarray | torch.Tensor) -> torch.Tensor:
    """images[idx] for a tensor or Rows -> uint8 (len(idx), C, H, W)."""
    if isinstance(images, Rows):
        return images.gather(idx)
    return images[torch.as_tensor(idx, dtype=torch.long)]


@dataclass(frozen=True)
class Placement:
    on_device: bool
    reason: str

    def param(self) -> str:
        return "device" if self.on_device else "stream"


def placement(mode: str, nbytes: int, device: torch.device, budget_mb: float | None = None,
              workers_per_device: int = 1) -> Placement:
    """Whether a set of `nbytes` goes to `device` whole (data.on_device: always | never | auto).

    auto: on the device when it fits in `budget_mb` (data.device_budget_mb), else in
    DEVICE_SHARE of the device memory one worker may use (a GPU's total / workers_per_device).
    On the CPU auto streams: the memory map is host memory already, shared by every worker
    through the page cache, and a private copy per trial is what made memory grow with the set."""
    size = _size(nbytes)
    if mode == "always":
        return Placement(True, f"data.on_device=always ({size})")
    if mode == "never":
        return Placement(False, f"data.on_device=never ({size} streamed from the memory map)")
    if budget_mb is not None:
        budget, where = budget_mb * 2**20, f"data.device_budget_mb={budget_mb:g}"
    elif device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        budget = DEVICE_SHARE * total / max(1, workers_per_device)
        where = (f"{DEVICE_SHARE:g} of {total / 2**30:.1f} GiB"
                 + (f" / {workers_per_device} workers" if workers_per_device > 1 else ""))
    else:
        return Placement(False, f"auto: {size} streamed from the memory map (on the CPU the map is "
                                f"already in memory, shared between workers)")
    fits = nbytes <= budget
    return Placement(fits, f"auto: {size} {'fits' if fits else 'does not fit'} in {_size(budget)} ({where})")


def _size(nbytes: float) -> str:
    """'1.50 GiB', '12.3 MiB' or '36 KiB': a small test set is not '0.0 MiB'."""
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.2f} GiB"
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


def epoch_batches(images: torch.Tensor | Rows, perm: torch.Tensor, batch_size: int, steps: int,
                  device: torch.device) -> Iterator[torch.Tensor]:
    """One epoch's batches on `device`: images[perm[i*bs:(i+1)*bs]] for i < steps (uint8
    (B, C, H, W)). A tensor already on `device` is indexed there; anything else is streamed
    from the map: on a GPU each batch is gathered into pinned memory by a background thread one
    batch ahead and copied with non_blocking; on the CPU it is gathered in the loop (a thread
    would only compete with the step's own threads for the cores: measured 0.86-0.98 of the
    on-device rate with one, benchmarks/scale.py)."""
    if isinstance(images, torch.Tensor) and images.device == device:
        perm = perm.to(device)
        for i in range(steps):
            yield images[perm[i * batch_size:(i + 1) * batch_size]]
        return
    rows = as_rows(images)
    if device.type == "cpu":  # nothing to overlap with: the step already uses every core
        for i in range(steps):
            yield rows.gather(perm[i * batch_size:(i + 1) * batch_size])
        return
    yield from _streamed(rows, perm, batch_size, steps, device)


def _streamed(rows: Rows, perm: torch.Tensor, bs: int, steps: int, device: torch.device) -> Iterator[torch.Tensor]:
    """A background thread gathers each batch one ahead. On CUDA it gathers into one of two
    pinned buffers, reused only once the copy out of it has finished (an event per buffer,
    waited on by the thread, never by the step loop); on the CPU each batch is a new tensor."""
    pin = device.type == "cuda"
    buffers = [torch.empty((bs, *rows.shape[1:]), dtype=rows.dtype, pin_memory=True) for _ in range(2)] if pin else []
    copied: list = [None, None]
    ready: Queue = Queue(maxsize=1)
    free: Queue = Queue()
    for b in range(2):
        free.put(b)
    stop = threading.Event()

    def fill() -> None:
        try:
            for i in range(steps):
                idx = perm[i * bs:(i + 1) * bs]
                if not pin:
                    ready.put((0, rows.gather(idx)))
                else:
                    b = free.get()
                    if stop.is_set():
                        return
                    if copied[b] is not None:
                        copied[b].synchronize()
                    ready.put((b, rows.gather(idx, buffers[b][:len(idx)])))
                if stop.is_set():
                    return
        except BaseException as e:  # handed to the consumer, raised there
            ready.put((None, e))

    thread = threading.Thread(target=fill, daemon=True, name="vicreg-batches")
    thread.start()
    try:
        for _ in range(steps):
            b, x = ready.get()
            if b is None:
                raise x
            if pin:
                x = x.to(device, non_blocking=True)
                copied[b] = torch.cuda.Event()
                copied[b].record()
            yield x
            if pin:
                free.put(b)
    finally:
        stop.set()
        free.put(0)  # wake the thread if it waits for a buffer
        while thread.is_alive():  # or for room in the queue
            try:
                ready.get_nowait()
            except Exception:
                pass
            thread.join(timeout=0.05)
