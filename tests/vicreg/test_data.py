"""Datasets: the DRAC22 layout, the decode-once cache, folds, CIFAR-10 and every bad input."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing as mp
import os
import pickle
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vicreg.data.cache as data_mod
from tests.conftest import tiny_config
from tests.helpers import REPO, vicreg_cli
from vicreg.config import DataConfig, load_config
from vicreg.data import HOLDOUT, load_datasets, make_folds, pretrain_selection
from vicreg.data.drac22 import LABELS_CSV, TASK_DIR, TEST_DIR, TRAIN_DIR
from vicreg.data.synthetic import grade_counts, make_synthetic
from vicreg.errors import DataError


def _cfg(root: Path, tmp: Path, **sets):
    return tiny_config(**{"data.dataset": "drac22", "data.root": str(root),
                          "data.cache_dir": str(tmp / "cache"), **sets}).data


@pytest.fixture()
def root(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset that a test may damage."""
    dst = tmp_path / "drac"
    shutil.copytree(synthetic_root, dst)
    return dst


def _task(root: Path) -> Path:
    return root / TASK_DIR


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def _count_decodes(monkeypatch) -> dict:
    calls = {"n": 0}
    real = data_mod.decode_image

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(data_mod, "decode_image", counting)
    return calls


# --- layout ------------------------------------------------------------------------


def test_reads_the_layout_from_either_root(root: Path, tmp_path: Path) -> None:
    a = load_datasets(_cfg(root, tmp_path))
    b = load_datasets(_cfg(_task(root), tmp_path))
    assert a.train.images.shape == (60, 1, 32, 32) and a.train.images.dtype.is_floating_point is False
    assert a.train.names == b.train.names and np.array_equal(a.train.labels, b.train.labels)
    assert sorted(np.bincount(a.train.labels).tolist()) == sorted(grade_counts(60))
    assert a.test is not None and len(a.test.names) == 20
    csv_rows = (_task(root) / LABELS_CSV).read_text().splitlines()[1:]
    assert a.train.names == [r.split(",")[0] for r in csv_rows]


def test_test_set_under_its_own_root(root: Path, tmp_path: Path) -> None:
    test_root = tmp_path / "test-release"
    (test_root / TASK_DIR / TEST_DIR).parent.mkdir(parents=True)
    shutil.move(str(_task(root) / TEST_DIR), str(test_root / TASK_DIR / TEST_DIR))
    d = load_datasets(_cfg(root, tmp_path, **{"data.test_root": str(test_root)}))
    assert d.test is not None and len(d.test.names) == 20


def test_test_names_sort_numerically(tmp_path: Path) -> None:
    make_synthetic(tmp_path, count=6, size=16, seed=0, test_count=3)
    test_dir = _task(tmp_path) / TEST_DIR
    for p in list(test_dir.iterdir()):
        p.unlink()
    for n in ("1312.png", "161.png", "998.png"):
        Image.new("L", (16, 16)).save(test_dir / n)
    d = load_datasets(_cfg(tmp_path, tmp_path))
    assert d.test.names == ["161.png", "998.png", "1312.png"]


def test_colour_images_become_grey_with_one_warning(root: Path, tmp_path: Path) -> None:
    train = _task(root) / TRAIN_DIR
    for p in sorted(train.glob("*.png"))[:3]:
        Image.open(p).convert("RGB").save(p)
    with pytest.warns(UserWarning, match="3 colour image") as rec:
        d = load_datasets(_cfg(root, tmp_path))
    assert len([w for w in rec if "colour" in str(w.message)]) == 1
    assert d.train.images.shape[1] == 1


# --- the cache ---------------------------------------------------------------------


def test_second_load_does_not_decode(root: Path, tmp_path: Path, monkeypatch) -> None:
    calls = _count_decodes(monkeypatch)
    first = load_datasets(_cfg(root, tmp_path))
    assert calls["n"] == 80
    second = load_datasets(_cfg(root, tmp_path))
    assert calls["n"] == 80
    assert np.array_equal(first.train.images.numpy(), second.train.images.numpy())
    load_datasets(_cfg(root, tmp_path, **{"data.image_size": 48}))  # a new size decodes again
    assert calls["n"] == 160


def test_changed_source_file_invalidates_the_cache(root: Path, tmp_path: Path, monkeypatch) -> None:
    calls = _count_decodes(monkeypatch)
    before = load_datasets(_cfg(root, tmp_path))
    p = _task(root) / TRAIN_DIR / before.train.names[0]
    Image.new("L", (96, 96), color=255).save(p)
    after = load_datasets(_cfg(root, tmp_path))
    assert calls["n"] == 80 + 60  # the training set again, not the unchanged test set
    assert after.train.images[0].float().mean() > 250
    assert not np.array_equal(before.train.images[0].numpy(), after.train.images[0].numpy())
    # The digest MLflow shows as the dataset's: the same for the same files, new for a changed image.
    again = load_datasets(_cfg(root, tmp_path))
    assert again.train.digest == after.train.digest != before.train.digest
    assert again.test.digest == before.test.digest and again.train.source == str((_task(root) / TRAIN_DIR).resolve())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "sidecar"])
def test_damaged_cache_is_rebuilt_with_one_warning(root: Path, tmp_path: Path, damage: str) -> None:
    good = load_datasets(_cfg(root, tmp_path))
    expected, names = good.train.images.clone(), good.train.names
    del good  # its memory map: a file cut short under a live map is a SIGBUS, not a damaged cache
    npy = next(p for p in (tmp_path / "cache").glob("*-train-*.npy"))
    whole = npy.read_bytes()
    npy.unlink()
    if damage == "truncate":
        npy.write_bytes(whole[: len(whole) // 2])
    elif damage == "garbage":
        npy.write_bytes(np.random.default_rng(0).bytes(100))
    else:  # the sidecar says another count
        npy.write_bytes(whole)
        meta = npy.with_suffix(".json")
        info = json.loads(meta.read_text())
        meta.write_text(json.dumps({**info, "names": info["names"][:-1]}))
    with pytest.warns(UserWarning, match=rf"{npy.name}: damaged cache file .*rebuilding it") as caught:
        again = load_datasets(_cfg(root, tmp_path))
    assert len([w for w in caught if "damaged" in str(w.message)]) == 1
    assert np.array_equal(expected.numpy(), again.train.images.numpy())
    assert again.train.names == names
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next load is clean
        load_datasets(_cfg(root, tmp_path))


def test_digits_are_real_scans_from_scikit_learn() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    d = load_datasets(tiny_config(**{"data.dataset": "digits", "data.image_size": 8}).data)
    raw = sklearn_digits()
    assert d.train.images.shape == (1797, 1, 8, 8) and d.test is None
    np.testing.assert_array_equal(d.train.images[:, 0].numpy(), np.round(raw.images * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(d.train.labels, raw.target)
    assert len(d.train.digest) == 16 and d.train.name == "digits"


def test_nothing_is_written_into_the_dataset_folder(root: Path, tmp_path: Path) -> None:
    before = _listing(root)
    d = load_datasets(_cfg(root, tmp_path, **{"data.folds_file": str(tmp_path / "folds.csv")}))
    make_folds(d.train.names, d.train.labels, 5, 0, tmp_path / "folds.csv")
    assert _listing(root) == before


def _load_in_child(args) -> tuple[int, bytes]:
    root, cache = args
    calls = {"n": 0}
    real = data_mod.decode_image

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    data_mod.decode_image = counting
    cfg = tiny_config(**{"data.dataset": "drac22", "data.root": root, "data.cache_dir": cache}).data
    d = load_datasets(cfg)
    return calls["n"], d.train.images.numpy().tobytes()


@pytest.mark.slow  # two decoding processes: make test
def test_two_processes_share_one_atomic_decode(root: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    with mp.get_context("spawn").Pool(2) as pool:
        results = pool.map(_load_in_child, [(str(root), cache)] * 2)
    # Every image decoded once in all (not once per process): whichever process takes an
    # entry's lock first decodes it (train and test sets are separate entries), the other waits.
    assert sum(n for n, _ in results) == 80
    assert results[0][1] == results[1][1]
    leftovers = [p.name for p in Path(cache).iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


# --- folds -------------------------------------------------------------------------


def test_folds_are_stratified_stable_and_stored(synthetic_images, tmp_path: Path) -> None:
    names, labels = synthetic_images.train.names, synthetic_images.train.labels
    path = tmp_path / "study" / "folds.csv"
    f1 = make_folds(names, labels, 5, seed=0, path=path, holdout=0.2)
    assert path.read_text().startswith("# folds=5 seed=0 holdout=0.2\nimage name,label,fold\n")
    # Reused from the file: every trial of a study sees the same folds and the same hold-out.
    assert np.array_equal(make_folds(names, labels, 5, seed=0, path=path, holdout=0.2), f1)
    assert np.array_equal(make_folds(names, labels, 5, seed=0, holdout=0.2), f1)  # deterministic
    hold = f1 == HOLDOUT
    assert hold.sum() == round(0.2 * len(names))
    # Stratified: each grade's share of the hold-out within one image of its share overall.
    assert np.all(np.abs(np.bincount(labels[hold], minlength=3) - np.bincount(labels, minlength=3) * 0.2) <= 1)
    cv_labels = labels[~hold]
    assert sorted(np.unique(f1[~hold]).tolist()) == [0, 1, 2, 3, 4]
    for k in range(5):
        counts = np.bincount(labels[f1 == k], minlength=3)
        assert np.all(np.abs(counts - np.bincount(cv_labels, minlength=3) / 5) <= 1)
    assert (make_folds(names, labels, 5, seed=0) >= 0).all()  # holdout=0: every image in a fold


@pytest.mark.parametrize("k, seed, holdout, match", [
    (3, 0, 0.2, "made with 'folds=5 seed=0 holdout=0.2', the config asks 'folds=3 seed=0 holdout=0.2'"),
    (5, 1, 0.2, "the config asks 'folds=5 seed=1 holdout=0.2'"),
    (5, 0, 0.3, "the config asks 'folds=5 seed=0 holdout=0.3'"),
])
def test_stored_folds_made_otherwise_are_an_error(synthetic_images, tmp_path: Path, k, seed, holdout,
                                                  match) -> None:
    names, labels = synthetic_images.train.names, synthetic_images.train.labels
    path = tmp_path / "folds.csv"
    make_folds(names, labels, 5, 0, path, holdout=0.2)
    with pytest.raises(DataError, match=f"^{re.escape(str(path))}: stored folds were made with") as e:
        make_folds(names, labels, k, seed, path, holdout=holdout)
    assert match in str(e.value) and "\n" not in str(e.value)


def test_stored_folds_that_do_not_match_or_parse_are_an_error(synthetic_images, tmp_path: Path) -> None:
    names, labels = synthetic_images.train.names, synthetic_images.train.labels
    path = tmp_path / "folds.csv"
    make_folds(names, labels, 5, 0, path)
    with pytest.raises(DataError, match="do not match"):
        make_folds(names[:-1], labels[:-1], 5, 0, path)
    path.write_text("# folds=5 seed=0 holdout=0\nimage name,label,fold\n001.png,x,1\n")
    with pytest.raises(DataError, match="cannot be parsed as a folds file"):
        make_folds(names, labels, 5, 0, path)
    path.write_text("image name,label,fold\n001.png,0,1\n")
    with pytest.raises(DataError, match="no '# folds=' settings line"):
        make_folds(names, labels, 5, 0, path)


def test_pretraining_sees_no_holdout_image_by_default(root: Path, tmp_path: Path) -> None:
    data = load_datasets(_cfg(root, tmp_path))
    folds = make_folds(data.train.names, data.train.labels, 3, 0, holdout=0.25)
    hold = set(np.flatnonzero(folds == HOLDOUT).tolist())
    cfg = load_config(None, [f"data.root={root}", "data.include_test_in_pretrain=true"]).data
    images, record = pretrain_selection(data, folds, cfg)
    assert record == {"pretrain.labelled_cv": 45, "pretrain.holdout": 0, "pretrain.test": 20}
    assert images.shape[0] == 65
    seen = {bytes(x.numpy()) for x in images.materialise()}
    assert not any(bytes(data.train.images[i].numpy()) in seen for i in hold)
    cfg = load_config(None, [f"data.root={root}", "data.holdout_in_pretrain=true"]).data
    images, record = pretrain_selection(data, folds, cfg)
    assert images.shape[0] == 60 and record["pretrain.holdout"] == 15 and record["pretrain.test"] == 0


# --- CIFAR-10 ----------------------------------------------------------------------


def _write_cifar(folder: Path, per_batch: int = 10) -> None:
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist()}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_reads_the_python_batches(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    cfg = tiny_config(**{"data.dataset": "cifar10", "data.root": str(tmp_path)}).data
    d = load_datasets(cfg)
    assert d.train.images.shape == (50, 3, 32, 32) and d.test.images.shape == (10, 3, 32, 32)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        first = pickle.load(f)
    assert np.array_equal(d.train.images[0].numpy().reshape(-1), first["data"][0])
    assert d.train.labels[0] == first["labels"][0]


def test_cifar10_missing_says_where_and_what(tmp_path: Path) -> None:
    cfg = tiny_config(**{"data.dataset": "cifar10", "data.root": str(tmp_path)}).data
    match = r"cifar-10-batches-py: CIFAR-10 not found .*data_batch_1.*never downloaded"
    with pytest.raises(DataError, match=match):
        load_datasets(cfg)


# --- synthetic ---------------------------------------------------------------------


def test_synthetic_layout_balance_and_determinism(tmp_path: Path) -> None:
    # The real set's balance: 611 training images split 329/212/70, and 386 test images by the
    # default ratio (make_synthetic computes both so; the files are checked on a set of 30, since
    # 997 generated images cost 7 s).
    assert grade_counts(611) == [329, 212, 70]
    make_synthetic(tmp_path / "b", count=30, size=16, seed=3)
    make_synthetic(tmp_path / "b2", count=30, size=16, seed=3)
    make_synthetic(tmp_path / "c", count=30, size=16, seed=4, test_count=0)  # its CSV is drawn first
    task = _task(tmp_path / "b")
    rows = (task / LABELS_CSV).read_text().splitlines()
    assert rows[0] == "image name,DR grade"
    grades = [int(r.split(",")[1]) for r in rows[1:]]
    assert np.bincount(grades).tolist() == grade_counts(30) == [17, 10, 3]
    names = [r.split(",")[0] for r in rows[1:]]
    assert all(len(n) == 7 and n.endswith(".png") for n in names)  # '001.png'
    tests = sorted(p.name for p in (task / TEST_DIR).glob("*.png"))
    assert len(tests) == round(30 * 386 / 611) and set(tests).isdisjoint(names)
    img = Image.open(task / TRAIN_DIR / names[0])
    assert img.mode == "L" and img.size == (16, 16)
    # Determinism (same seed: same bytes; another seed: other names and grades).
    small = [(tmp_path / d / TASK_DIR) for d in ("b", "b2", "c")]
    assert [f.read_bytes() for f in sorted((small[0] / TRAIN_DIR).glob("*.png"))] == \
        [f.read_bytes() for f in sorted((small[1] / TRAIN_DIR).glob("*.png"))]
    assert (small[0] / LABELS_CSV).read_text() == (small[1] / LABELS_CSV).read_text()
    assert (small[0] / LABELS_CSV).read_text() != (small[2] / LABELS_CSV).read_text()


def test_synthetic_grade_is_not_a_global_statistic(tmp_path: Path) -> None:
    make_synthetic(tmp_path, count=150, size=64, seed=1, test_count=0)
    task = _task(tmp_path)
    rows = [r.split(",") for r in (task / LABELS_CSV).read_text().splitlines()[1:]]
    grades = np.array([int(g) for _, g in rows])
    imgs = np.stack([np.asarray(Image.open(task / TRAIN_DIR / n), dtype=np.float32) for n, _ in rows])
    for stat in (imgs.mean(axis=(1, 2)), imgs.std(axis=(1, 2))):
        assert abs(np.corrcoef(stat, grades)[0, 1]) < 0.25


# --- bad input ---------------------------------------------------------------------


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:200])


def _csv(root: Path) -> Path:
    return _task(root) / LABELS_CSV


@pytest.mark.parametrize("damage,match", [
    (lambda r: shutil.rmtree(r), r"data root does not exist"),
    (lambda r: shutil.rmtree(_task(r)), r"not a DRAC22 Task 3 layout \(expected folder 'C. Diabetic"),
    (lambda r: shutil.rmtree(_task(r) / TRAIN_DIR), r"expected folder '1. Original Images/a. Training Set'"),
    (lambda r: _csv(r).unlink(), r"Training Labels.csv: labels CSV missing"),
    (lambda r: _csv(r).write_text("name,grade\n001.png,0\n"),
     r"expected columns 'image name' and 'DR grade', found \['name', 'grade'\]"),
    (lambda r: _csv(r).write_text(_csv(r).read_text().replace(",1\n", ",3\n", 1)),
     r"row \d+: grade '3' is not 0, 1 or 2"),
    (lambda r: _csv(r).write_text(_csv(r).read_text().replace(",0\n", ",1.5\n", 1)),
     r"row \d+: grade '1.5' is not 0, 1 or 2"),
    (lambda r: _csv(r).write_text(_csv(r).read_text() + _csv(r).read_text().splitlines()[1] + "\n"),
     r"row 62: duplicate image name"),
    (lambda r: sorted((_task(r) / TRAIN_DIR).glob("*.png"))[0].unlink(), r"has a row but is not in"),
    (lambda r: sorted((_task(r) / TRAIN_DIR).glob("*.png"))[0].write_bytes(b""), r"\.png: empty file"),
    (lambda r: _truncate(sorted((_task(r) / TRAIN_DIR).glob("*.png"))[1]),
     r"\.png: cannot decode image"),
    (lambda r: sorted((_task(r) / TRAIN_DIR).glob("*.png"))[2].write_text("not a png at all"),
     r"\.png: cannot decode image"),
])
def test_bad_input_is_one_clear_line_and_writes_nothing(root: Path, tmp_path: Path, damage,
                                                        match: str) -> None:
    damage(root)
    with pytest.raises(DataError, match=match) as info:
        load_datasets(_cfg(root, tmp_path))
    assert "\n" not in str(info.value)
    cache = tmp_path / "cache"
    assert not cache.exists() or not list(cache.glob("*.npy"))


def test_image_without_a_row_is_a_warning(root: Path, tmp_path: Path) -> None:
    Image.new("L", (96, 96)).save(_task(root) / TRAIN_DIR / "999.png")
    with pytest.warns(UserWarning, match="1 image\\(s\\) with no CSV row"):
        d = load_datasets(_cfg(root, tmp_path))
    assert "999.png" not in d.train.names


def test_skip_bad_images_records_the_count(root: Path, tmp_path: Path) -> None:
    bad = sorted((_task(root) / TRAIN_DIR).glob("*.png"))[:2]
    for p in bad:
        p.write_bytes(p.read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipped 2 undecodable"):
        d = load_datasets(_cfg(root, tmp_path, **{"data.skip_bad_images": True}))
    assert d.train.skipped == [p.name for p in bad]
    assert len(d.train.names) == 58 and len(d.train.labels) == 58


def test_missing_drac22_root_points_to_the_data(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("DRAC22_ROOT", raising=False)
    cfg = tiny_config(**{"data.dataset": "drac22"}).data
    with pytest.raises(DataError, match="DRAC22_ROOT.*synthetic"):
        load_datasets(cfg)


def test_check_data_cli(root: Path, capsys) -> None:
    ok = vicreg_cli(capsys, "check-data", "--data-root", str(root))
    assert ok.returncode == 0, ok.stderr
    counts = grade_counts(60)
    expected = f"training images: 60 (grade 0: {counts[0]}, 1: {counts[1]}, 2: {counts[2]}); test images: 20"
    assert expected in ok.stdout
    train = sorted((_task(root) / TRAIN_DIR).glob("*.png"))
    train[-1].write_bytes(b"")
    train[-2].write_bytes(train[-2].read_bytes()[:50])  # rows late in the CSV: the bad grade is early
    _csv(root).write_text(_csv(root).read_text().replace(",1\n", ",7\n", 1))
    bad = vicreg_cli(capsys, "check-data", "--data-root", str(root))
    assert bad.returncode == 1
    errors = [line for line in bad.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    missing = vicreg_cli(capsys, "check-data", "--data-root", str(root / "nope"))
    assert missing.returncode == 2 and "data root does not exist" in missing.stderr


def test_make_synthetic_cli(tmp_path: Path, capsys) -> None:
    r = vicreg_cli(capsys, "make-synthetic", "--out", str(tmp_path), "--count", "12", "--size", "16", "--seed", "1")
    assert r.returncode == 0, r.stderr
    assert len(list((_task(tmp_path) / TRAIN_DIR).glob("*.png"))) == 12


def test_textures_are_tiles_of_the_bundled_photographs() -> None:
    if importlib.util.find_spec("skimage") is None:
        pytest.skip("the textures live in scikit-image's wheel (the dev extra installs it)")
    from vicreg.data import load_datasets

    d = load_datasets(DataConfig(dataset="textures", image_size=16, crop_source_size=32))
    assert d.train.images.shape == (1536, 1, 16, 16) and d.train.large.shape == (1536, 1, 32, 32)
    assert np.bincount(d.train.labels).tolist() == [256] * 6 and d.train.names[0] == "brick-000"
    # The 16 px images are the 32 px tiles area-averaged, the tiles are distinct real pixels.
    shrunk = torch.nn.functional.avg_pool2d(d.train.large.float(), 2)
    assert (shrunk - d.train.images.float()).abs().max() <= 1
    assert len({bytes(t.numpy()) for t in d.train.large}) == 1536


def test_pretraining_crops_from_the_larger_cache(synthetic_root: Path, tmp_path: Path) -> None:
    from vicreg.data import load_datasets, make_folds, pretrain_selection

    cfg = DataConfig(dataset="synthetic", root=str(synthetic_root), cache_dir=str(tmp_path), image_size=16,
                     crop_source_size=32)
    d = load_datasets(cfg)
    folds = make_folds(d.train.names, d.train.labels, 3, 0, holdout=0.2)
    images, _ = pretrain_selection(d, folds, cfg)
    assert d.train.images.shape[-1] == 16 and images.shape[-1] == 32 and len(images) == int((folds >= 0).sum())


def test_every_csv_we_write_round_trips_names_with_commas_quotes_and_newlines(tmp_path) -> None:
    """folds.csv (written, then reused), the predictions and the DRAC22 submission, read back
    with csv.reader: each name as it was. Before, a comma or newline corrupted folds.csv for good."""
    import csv

    from vicreg.data import make_folds
    from vicreg.evaluate.predict import write_predictions, write_submission

    names = ["plain", "a,b", 'say "hi"', "two\nlines", "trailing,"] * 4
    names = [f"{n}{i}" for i, n in enumerate(names)]
    labels = np.array([i % 2 for i in range(len(names))])
    path = tmp_path / "folds.csv"
    folds = make_folds(names, labels, 2, 0, path, 0.0)
    again = make_folds(names, labels, 2, 0, path, 0.0)  # read back: the same names and folds
    assert again.tolist() == folds.tolist()
    rows = list(csv.reader(path.read_text().split("\n", 1)[1].splitlines(keepends=True)))
    assert [r[0] for r in rows[1:]] == names
    probs = np.tile([0.2, 0.7, 0.1], (len(names), 1))
    write_predictions(names, probs, ["x,y", "z", "w"], tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="") as f:
        got = list(csv.reader(f))
    assert sorted(r[0] for r in got[1:]) == sorted(names) and {r[1] for r in got[1:]} == {"z"}
    write_submission(names, probs, tmp_path / "s.csv")
    with open(tmp_path / "s.csv", newline="") as f:
        got = list(csv.reader(f))
    assert got[0] == ["case", "class", "P0", "P1", "P2"] and [r[0] for r in got[1:]] == names


@pytest.mark.parametrize("mode", ["F", "LA", "I;16"])
def test_grey_modes_decode_without_a_colour_warning(tmp_path, mode: str) -> None:
    """A 32-bit float TIFF with values in [0, 1] (it decoded to all zeros), grey with alpha and
    16-bit grey: scaled to 8 bit by their maximum, and not reported as colour."""
    import warnings

    from PIL import Image

    from vicreg.data.cache import decode_image

    ramp = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    path = tmp_path / "x.tif"
    if mode == "F":
        Image.fromarray(ramp, mode="F").save(path)
    elif mode == "LA":
        Image.fromarray((ramp * 255).astype(np.uint8)).convert("LA").save(path.with_suffix(".png"))
        path = path.with_suffix(".png")
    else:
        Image.fromarray((ramp * 4095).astype(np.uint16)).save(path.with_suffix(".png"))
        path = path.with_suffix(".png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arr, was_rgb = decode_image(path, 32, 1)
    assert not was_rgb and arr.max() >= 250 and arr.min() <= 5, (arr.min(), arr.max())



def test_the_data_package_names_resolve_and_its_layout_checks_load_no_torch() -> None:
    """vicreg.data resolves its public names on first use: each in __all__ is found, and the
    torch-free parts (layout checks, the generator) import without torch, in a fresh process."""
    import vicreg.data as data

    assert sorted(data._HOME) == data.__all__
    assert all(getattr(data, name) is not None for name in data.__all__)
    code = ("import sys, vicreg.data.drac22, vicreg.data.own, vicreg.data.synthetic, vicreg.data.splits\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.strip() == "False", out.stderr
