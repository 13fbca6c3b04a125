"""vicreg/data/rows.py: a selection is an index into the memory-mapped cache, not a copy; the
streamed path and the on-device path train on the same batches (bit-identical losses on the
CPU); data.on_device's choice and its reason."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config

from vicreg.data import HOLDOUT, load_datasets, make_folds, pretrain_selection
from vicreg.data.rows import Rows, epoch_batches, placement, take
from vicreg.train import pretrain


def _parts() -> tuple[Rows, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8, generator=g)
    b = torch.randint(0, 256, (7, 1, 4, 4), dtype=torch.uint8, generator=g)
    rows_a = np.array([9, 0, 4, 2, 7])
    return Rows(((a, rows_a), (b, None))), torch.cat([a[torch.from_numpy(rows_a)], b])


def test_rows_gather_what_concatenating_the_parts_would_hold() -> None:
    rows, reference = _parts()
    assert rows.shape == tuple(reference.shape) and len(rows) == 12 and rows.nbytes == reference.numel()
    idx = torch.tensor([11, 0, 5, 3, 5, 10, 1])  # across both parts, repeated, out of order
    assert torch.equal(rows.gather(idx), reference[idx])
    assert torch.equal(rows.gather(torch.tensor([2, 1])), reference[[2, 1]])  # one part only
    assert torch.equal(rows.materialise(), reference)
    assert torch.equal(take(reference, idx), take(rows, idx))
    out = torch.empty((3, 1, 4, 4), dtype=torch.uint8)
    assert rows.gather(torch.tensor([6, 7, 8]), out).data_ptr() == out.data_ptr()  # into a given buffer


def test_streamed_batches_are_the_indexed_ones_in_order() -> None:
    rows, reference = _parts()
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    streamed = list(epoch_batches(rows, perm, 5, 3, torch.device("cpu")))  # the last one partial (2)
    direct = list(epoch_batches(reference, perm, 5, 3, torch.device("cpu")))
    assert [len(b) for b in streamed] == [5, 5, 2]
    for s, d, i in zip(streamed, direct, range(3)):
        assert torch.equal(s, d) and torch.equal(s, reference[perm[i * 5:(i + 1) * 5]])


def test_a_failing_read_is_raised_in_the_step_loop_not_lost_in_the_thread() -> None:
    rows, _ = _parts()
    bad = Rows(((rows.parts[0][0], np.array([0, 99])),))  # row 99 does not exist
    with pytest.raises(IndexError):
        list(epoch_batches(bad, torch.tensor([0, 1]), 2, 1, torch.device("cpu")))


def test_the_selection_is_an_index_into_the_cache_not_a_copy(synthetic_root, tmp_path) -> None:
    cfg = tiny_config(tmp_path, **{"data.dataset": "synthetic", "data.root": str(synthetic_root),
                                   "data.include_test_in_pretrain": True})
    data = load_datasets(cfg.data)
    folds = make_folds(data.train.names, data.train.labels, 3, 0, holdout=0.25)
    rows, _ = pretrain_selection(data, folds, cfg.data)
    (train, index), (test, none) = rows.parts
    assert train.data_ptr() == data.train.images.data_ptr() and test.data_ptr() == data.test.images.data_ptr()
    assert isinstance(data.train.images.numpy().base, np.memmap) or data.train.images.numpy().base is not None
    assert none is None and np.array_equal(index, np.flatnonzero(folds != HOLDOUT))


def test_placement_follows_on_device_and_the_budget() -> None:
    cpu = torch.device("cpu")
    assert placement("always", 10 * 2**20, cpu).on_device
    assert not placement("never", 10, cpu).on_device
    assert not placement("auto", 10, cpu).on_device  # the CPU reads the map it already has
    small = placement("auto", 10 * 2**20, cpu, budget_mb=1)
    assert not small.on_device and small.reason == "auto: 10.0 MiB does not fit in 1.0 MiB (data.device_budget_mb=1)"
    assert placement("auto", 2**20, cpu, budget_mb=1).on_device


@pytest.mark.slow  # 4 s: two pretrainings to compare: make test
def test_a_set_over_the_device_budget_streams_with_the_on_device_losses(synthetic_root, tmp_path, capsys) -> None:
    """The same seed through both paths: the same batches, views and steps, so the same losses
    to the last bit on the CPU. The set (labelled CV + test images, two maps) is larger than
    the forced budget, so auto streams it."""
    sets = {"data.dataset": "synthetic", "data.root": str(synthetic_root), "data.include_test_in_pretrain": True,
            "train.epochs": 2, "train.progress": True}
    cfg = tiny_config(tmp_path, **sets)
    data = load_datasets(cfg.data)
    folds = make_folds(data.train.names, data.train.labels, 3, 0, holdout=0.25)
    rows, _ = pretrain_selection(data, folds, cfg.data)
    assert rows.nbytes > 0.01 * 2**20
    streamed = pretrain(tiny_config(tmp_path, **sets, **{"data.device_budget_mb": 0.01}), rows)
    said = "data: streamed (auto: 65 KiB does not fit in 10 KiB (data.device_budget_mb=0.01))"
    assert said in capsys.readouterr().out
    on_device = pretrain(tiny_config(tmp_path, **sets, **{"data.on_device": "always"}), rows)
    assert (streamed.placement, on_device.placement) == ("stream", "device")
    assert [h["loss"] for h in streamed.history] == [h["loss"] for h in on_device.history]
    for (name, a), b in zip(streamed.model.state_dict().items(), on_device.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_background_reader_gives_the_same_batches_in_order() -> None:
    """The GPU path's reader (a thread one batch ahead), run here on plain memory: the batches
    of the in-loop path, in order, and a read error raised in the loop."""
    from vicreg.data.rows import _streamed

    rows, reference = _parts()
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    got = list(_streamed(rows, perm, 5, 3, torch.device("cpu")))
    assert [torch.equal(g, reference[perm[i * 5:(i + 1) * 5]]) for i, g in enumerate(got)] == [True] * 3
    bad = Rows(((rows.parts[0][0], np.array([0, 99])),))
    with pytest.raises(IndexError):
        list(_streamed(bad, torch.tensor([0, 1]), 2, 1, torch.device("cpu")))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_streaming_gives_the_indexed_batches_and_the_same_losses(synthetic_root, tmp_path) -> None:
    """On a GPU: the pinned, one-ahead reader hands over exactly the indexed batches, and a
    streamed pretraining's loss history matches the on-device one (bf16 and cuDNN: within a
    tolerance, not to the bit)."""
    rows, reference = _parts()
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    cuda = torch.device("cuda")
    got = [b.cpu() for b in epoch_batches(rows, perm, 5, 3, cuda)]
    assert all(torch.equal(g, reference[perm[i * 5:(i + 1) * 5]]) for i, g in enumerate(got))
    sets = {"data.dataset": "synthetic", "data.root": str(synthetic_root), "train.epochs": 2, "train.device": "cuda"}
    cfg = tiny_config(tmp_path, **sets)
    data = load_datasets(cfg.data)
    folds = make_folds(data.train.names, data.train.labels, 3, 0, holdout=0.25)
    rows, _ = pretrain_selection(data, folds, cfg.data)
    streamed = pretrain(tiny_config(tmp_path, **sets, **{"data.on_device": "never"}), rows)
    on_device = pretrain(tiny_config(tmp_path, **sets, **{"data.on_device": "always"}), rows)
    assert (streamed.placement, on_device.placement) == ("stream", "device")
    np.testing.assert_allclose([h["loss"] for h in streamed.history], [h["loss"] for h in on_device.history],
                               rtol=0.05)
