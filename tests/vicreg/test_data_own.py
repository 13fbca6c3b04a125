"""Your own images (vicreg/data/own.py): folder and CSV layouts that the tests make, in each
form the public DR sets use, with png, jpeg and tiff files, grey, RGB and 16-bit images, 5
classes, named labels and names without extensions; every fault one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.helpers import REPO, vicreg_cli
from vicreg.config import ConfigError, config_from_dict, load_config, primary_metric
from vicreg.data import load_datasets
from vicreg.data.own import check, data_channels, scan
from vicreg.errors import DataError

GRADES = ["none", "mild", "moderate", "severe", "proliferative"]  # named, in an order that is not sorted


def _image(path: Path, label: int, i: int, mode: str = "L", size: int = 40) -> None:
    """A small image whose class is visible: a disc whose radius grows with the label."""
    rng = np.random.default_rng(1000 * label + i)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (4 + 3 * label) ** 2
    a = (60 + 120 * disc + rng.normal(0, 15, (size, size))).clip(0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":  # 16-bit, using 12 bits as many scanners do
        Image.fromarray((a * 16).astype(np.uint16)).save(path)
    elif mode == "RGB":
        Image.fromarray(np.stack([a, a * 0.8, a * 0.6], -1).astype(np.uint8)).save(path)
    else:
        Image.fromarray(a.astype(np.uint8)).save(path)


def make_csv_set(root: Path, per_class: int = 8, test: int = 5, mode: str = "L",
                 grades: list[str] = GRADES) -> Path:
    """An APTOS-like set: train.csv (id_code,diagnosis: named grades, no extensions) with some
    rows marked test in a split column, images in train_images/ as png, jpeg and tiff."""
    rows = ["ID_Code,Diagnosis,Split"]  # other case than the config's columns
    exts = (".png", ".jpg", ".tif") if mode != "I;16" else (".png", ".tif", ".tif")  # JPEG has no 16 bits
    for label, grade in enumerate(grades):
        for i in range(per_class):
            name = f"{grade[:3]}{i:03d}"
            _image(root / "train_images" / f"{name}{exts[i % 3]}", label, i, mode)
            rows.append(f"{name},{grade},train")
    for i in range(test):
        _image(root / "train_images" / f"test{i:03d}.png", i % len(grades), 100 + i, mode)
        rows.append(f"test{i:03d},,test")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return root


def csv_config(root: Path, cache: Path, **over) -> dict:
    data = {"dataset": "csv", "root": str(root), "labels": "train.csv", "images": "train_images",
            "image_column": "id_code", "label_column": "diagnosis", "split_column": "split",
            "classes": GRADES, "ordinal": False, "image_size": 16, "batch_size": 8, "folds": 3,
            "cache_dir": str(cache)} | over
    return {"data": data}


def make_folder_set(root: Path, per_class: int = 6) -> Path:
    """ImageFolder layout: root/<class>/*, 5 classes, grey png and bmp; unlabelled/ and test/ beside."""
    for label in range(5):
        for i in range(per_class):
            _image(root / f"grade{label}" / f"{i}.{'png' if i % 2 else 'bmp'}", label, i)
    for i in range(4):
        _image(root / "extra" / f"u{i}.png", i % 5, 50 + i)
        _image(root / "test" / f"t{i}.jpeg", i % 5, 60 + i)
    return root


def folder_config(root: Path, cache: Path, **over) -> dict:
    return {"data": {"dataset": "folder", "root": str(root), "unlabelled": "extra", "test": "test",
                     "ordinal": True, "image_size": 16, "folds": 3, "cache_dir": str(cache)} | over}


def test_csv_layout_is_read_as_the_config_says(tmp_path: Path) -> None:
    root = make_csv_set(tmp_path / "aptos")
    cfg = config_from_dict(csv_config(root, tmp_path / "cache"))
    d = load_datasets(cfg.data)
    assert d.train.images.shape == (40, 1, 16, 16) and d.train.images.dtype == torch.uint8
    assert d.train.classes == GRADES  # the config's order, not sorted
    assert d.train.names[:2] == ["non000", "non001"] and d.train.labels[:8].tolist() == [0] * 8
    assert np.bincount(d.train.labels).tolist() == [8] * 5
    assert d.test.names == [f"test{i:03d}" for i in range(5)] and d.test.images.shape == (5, 1, 16, 16)
    assert primary_metric(cfg.data) == "f1"


def test_integer_labels_sort_numerically_and_folders_make_classes(tmp_path: Path) -> None:
    root = tmp_path / "eyepacs"
    rows = ["image,level"]
    for i, level in enumerate([0, 2, 10, 1, 0, 2, 10, 1] * 2):
        _image(root / "train" / f"{i}_left.jpeg", level % 5, i)
        rows.append(f"{i}_left,{level}")
    (root / "trainLabels.csv").write_text("\n".join(rows) + "\n")
    cfg = config_from_dict({"data": {"dataset": "csv", "root": str(root), "labels": "trainLabels.csv",
                                     "images": "train", "label_column": "LEVEL", "ordinal": True, "folds": 2,
                                     "holdout": 0.0, "image_size": 16, "cache_dir": str(tmp_path / "c")}})
    assert scan(cfg.data).classes == ["0", "1", "2", "10"]
    folder = make_folder_set(tmp_path / "imgs")
    files = scan(config_from_dict(folder_config(folder, tmp_path / "c")).data)
    assert files.classes == [f"grade{i}" for i in range(5)]  # the unlabelled and test folders are not classes
    assert files.names[0] == "grade0/0.bmp" and len(files.unlabelled) == 4
    assert files.test_names == ["t0.jpeg", "t1.jpeg", "t2.jpeg", "t3.jpeg"]


def test_channels_follow_the_data_and_16_bit_is_scaled(tmp_path: Path) -> None:
    grey = make_csv_set(tmp_path / "grey", per_class=4, test=0, mode="I;16")
    cfg = config_from_dict(csv_config(grey, tmp_path / "cache", folds=2, holdout=0.0, split_column=None))
    assert cfg.model.in_channels is None and data_channels(cfg.data) == 1
    d = load_datasets(cfg.data)
    # 12-bit values in a 16-bit file are scaled to 8 bits, not clipped (clipped, every pixel
    # above 255/4080 of the range would be white): the disc is bright, the background is not.
    assert d.train.images.max() > 200 and d.train.images.float().mean() < 150
    colour = make_csv_set(tmp_path / "rgb", per_class=4, test=0, mode="RGB")
    cfg = config_from_dict(csv_config(colour, tmp_path / "cache", folds=2, holdout=0.0, split_column=None))
    from vicreg.imagenet import resolve_init

    assert resolve_init(cfg).model.in_channels == 3
    assert load_datasets(cfg.data).train.images.shape[1] == 3
    # The config may say otherwise: colour images read as grey.
    assert load_datasets(cfg.data, channels=1).train.images.shape[1] == 1


def _fault_lines(root: Path, tmp_path: Path, **over) -> tuple[list[str], list[str]]:
    files, problems = check(config_from_dict(csv_config(root, tmp_path / "cache", **over)).data)
    return problems, files.warnings


def test_every_fault_is_one_line(tmp_path: Path) -> None:
    root = make_csv_set(tmp_path / "set", per_class=4, test=1)
    problems, warnings = _fault_lines(root, tmp_path)
    assert problems == [] and warnings == []
    csv_path = root / "train.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = lines[1].replace("none", "severe-ish")  # a label not among the classes
    lines.append(lines[2])  # a duplicate row
    lines.append("gone001,mild,train")  # a row whose image is missing
    csv_path.write_text("\n".join(lines) + "\n")
    _image(root / "train_images" / "stray.png", 0, 7)  # an image with no row
    (root / "train_images" / "non003.png").write_bytes(b"not a png")  # unreadable
    _image(root / "train_images" / "mil000.png", 1, 0, "RGB")  # mixed modes (replaces mil000's .png)
    problems, warnings = _fault_lines(root, tmp_path)
    text = "\n".join(problems + warnings)
    expected = [
        "train.csv: row 2: label 'severe-ish' is not among the classes (none, mild, moderate, severe, proliferative)",
        "train.csv: row 23: duplicate image 'non001' (first on row 3)",
        "train.csv: row 24: image 'gone001' is not in",
        "non003.png: cannot decode image",
        "class 'none': 3 labelled image(s), fewer than data.folds (3) plus one for the hold-out need (4)",
        "1 image(s) with no row in train.csv, ignored (first: stray.png)",
        "mixed image modes: ",
    ]
    for want in expected:
        assert sum(want in line for line in problems + warnings) == 1, (want, text)
    assert all("\n" not in line for line in problems + warnings)
    assert len(problems) == 5 and len(warnings) == 2


def test_missing_column_lists_the_columns_found(tmp_path: Path) -> None:
    root = make_csv_set(tmp_path / "set", per_class=4)
    with pytest.raises(Exception, match=r"no column 'grade' \(data.label_column\); the columns are 'ID_Code', "
                                        r"'Diagnosis', 'Split'"):
        scan(config_from_dict(csv_config(root, tmp_path, label_column="grade")).data)


def test_check_data_cli_prints_one_line_each(tmp_path: Path, capsys) -> None:
    root = make_csv_set(tmp_path / "set", per_class=5, test=0)
    (root / "train_images" / "sev001.jpg").unlink()
    cfg_path = tmp_path / "own.yaml"
    cfg_path.write_text(yaml.safe_dump(csv_config(root, tmp_path / "cache", split_column=None)))
    r = vicreg_cli(capsys, "check-data", "--config", str(cfg_path))
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "image 'sev001' is not in" in errors[0]
    assert "labelled images: 24 (none: 5, mild: 5, moderate: 5, severe: 4, proliferative: 5)" in r.stdout


def test_ordinal_must_be_said_and_nominal_sets_rank_by_f1(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.ordinal=None must be set for data.dataset=folder"):
        config_from_dict({"data": {"dataset": "folder", "root": "x"}})
    from sweeps.study import load_study

    root = REPO
    doc = yaml.safe_load((root / "experiments" / "folder.yaml").read_text())
    doc["base"]["data"]["ordinal"] = False
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert load_study(path).objective.metric == "f1_mean"
    doc["objective"] = {"metric": "kappa_mean"}
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="objective.metric=kappa_mean ranks unordered classes"):
        load_study(path)
    doc["base"]["data"]["ordinal"] = True
    path.write_text(yaml.safe_dump(doc))
    assert load_study(path).objective.metric == "kappa_mean"
    assert load_config(None, ["data.dataset=drac22"]).data.ordinal is None  # drac22: graded by default


def test_macro_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    from vicreg.evaluate import scores
    from vicreg.verdict import scores_of

    rng = np.random.default_rng(0)
    for _ in range(20):
        y, pred = rng.integers(0, 5, 60), rng.integers(0, 5, 60)
        y[y == 4] = 3  # a class with no true image
        conf = np.zeros((5, 5))
        np.add.at(conf, (y, pred), 1)
        want = f1_score(y, pred, labels=range(5), average="macro", zero_division=0)
        assert scores_of(conf, "f1") == pytest.approx(want, abs=1e-12)
        assert scores(y, np.eye(5)[pred])["f1"] == pytest.approx(want, abs=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("grades", [GRADES, ["non-referable", "referable"]], ids=["5-classes", "binary"])
def test_sweep_confirm_and_predict_on_a_csv_set(tmp_path: Path, monkeypatch, new_store, grades: list[str]) -> None:
    """A 2-trial sweep of the folder template on a made CSV set (5 named classes, unordered;
    or 2, as referable vs non-referable retinopathy, whose AUC once crashed every evaluation),
    its confirm stage with its registered model, then predict: the reports, verdicts and
    ranking follow macro-F1."""
    from sweeps.run import main

    monkeypatch.chdir(tmp_path)
    root = make_csv_set(tmp_path / "set", per_class=10 if len(grades) > 2 else 20, test=6, grades=grades)
    repo = REPO
    doc = yaml.safe_load((repo / "experiments" / "folder.yaml").read_text())
    doc["base"]["data"] |= {k: v for k, v in csv_config(root, tmp_path / "cache", classes=grades)["data"].items()
                            if k != "root"}
    doc["base"]["data"] |= {"image_size": 16, "batch_size": 16}
    doc["base"]["model"] = {"expander_hidden": 32, "expander_out": 32, "expander_layers": 2, "small_stem": False}
    doc["base"]["train"] = {"epochs": 1}  # the metric's path through scoring is under test, not learning
    doc["base"]["eval"] = {"protocol": "linear", "epochs": 3}
    doc["name"] = "own"
    doc["search"] = {"optim.lr": {"float": [1.0e-4, 1.0e-2], "log": True}}
    doc["budget"] = {"trials": 2}
    doc["confirm"] = {"top_k": 1, "seeds": 2}
    doc |= {"pruner": {"name": "none"}, "log_checkpoint": False, "log_plots": False}
    study = tmp_path / "own.yaml"
    study.write_text(yaml.safe_dump(doc))
    out = tmp_path / "runs"
    uri = new_store(tmp_path)
    assert main(["--config", str(study), "--data-root", str(root), "--tracking-uri", uri, "--out", str(out)]) == 0
    confirmed = json.loads((out / "confirmed.json").read_text())["ranked"]
    assert confirmed[0]["metric"] == "f1" and "cv_f1" in confirmed[0]["scores"]["vicreg"]
    assert [v["metric"] for v in confirmed[0]["verdicts"]] == ["f1", "f1"]
    best = yaml.safe_load((tmp_path / "best" / "own.yaml").read_text())
    assert best["metric"] == "f1_mean" and best["primary"] == "f1" and "f1" in best["top"][0]
    assert all(" f1 " in line for line in best["verdict"])
    # The registered encoder predicts the test rows: one row each, in name order.
    submission = tmp_path / "predictions.csv"
    assert main(["--config", str(study), "--data-root", str(root), "--tracking-uri", uri, "--out", str(out),
                 "--predict", "--submission", str(submission)]) == 0
    lines = submission.read_text().splitlines()
    assert lines[0] == "image,class," + ",".join(f"P{i}" for i in range(len(grades)))
    assert [line.split(",")[0] for line in lines[1:]] == [f"test{i:03d}" for i in range(6)]
    assert all(line.split(",")[1] in grades for line in lines[1:])
    assert all(abs(sum(map(float, line.split(",")[2:])) - 1) < 1e-4 for line in lines[1:])


def test_csv_names_cannot_reach_outside_the_images_folder(tmp_path: Path) -> None:
    """A CSV naming '../outside/secret.png', an absolute path, or a symlink (file or folder) that
    leads out of the images folder: each row is a problem naming it, and no such image is read."""
    from vicreg.data.own import scan_csv

    root = make_csv_set(tmp_path / "set", per_class=3, test=0)
    outside = tmp_path / "outside"
    _image(outside / "secret.png", 0, 0)
    (root / "train_images" / "linked.png").symlink_to(outside / "secret.png")
    (root / "train_images" / "linkdir").symlink_to(outside, target_is_directory=True)
    csv_path = root / "train.csv"
    csv_path.write_text(csv_path.read_text() + "../../outside/secret,none,train\n"
                        f"{outside / 'secret.png'},none,train\nlinked,none,train\nlinkdir/secret,none,train\n")
    files = scan_csv(config_from_dict(csv_config(root, tmp_path / "c")).data)
    problems = "\n".join(files.problems)
    assert "'../../outside/secret' must be a name inside" in problems
    assert f"'{outside / 'secret.png'}' must be a name inside" in problems
    assert "'linked' is a link that leads outside" in problems
    assert "'linkdir/secret' is a link that leads outside" in problems or "'linkdir/secret' is not in" in problems
    assert not any("secret" in str(p) for p in files.train)



@pytest.mark.parametrize("bad", ["empty", "text", "bomb"])
def test_an_unreadable_labelled_image_is_one_line_or_skipped(tmp_path: Path, monkeypatch, bad: str) -> None:
    """A 0-byte file, text named .png, or a decompression bomb among the labelled images: a
    DataError naming the file (the bomb with its pixel count) where the images are read, not
    a traceback from the channel scan before it; with skip_bad_images, skipped."""
    from PIL import Image

    from vicreg.data import load_datasets

    root = make_folder_set(tmp_path / "imgs", per_class=4)
    target = root / "grade0" / "bad.png"
    if bad == "empty":
        target.write_bytes(b"")
    elif bad == "text":
        target.write_text("not an image")
    else:
        for p in root.rglob("*"):  # the other images stay under the limit set below
            if p.is_file():
                Image.open(p).convert("L").resize((7, 7)).save(p)
        _image(target, 0, 99, size=40)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 pixels: over twice the limit
    cfg = config_from_dict(folder_config(root, tmp_path / "cache")).data
    with pytest.raises(DataError, match=str(target)) as e:
        load_datasets(cfg)  # channels from the data: the scan that once raised first
    assert "\n" not in str(e.value)
    if bad == "bomb":
        assert "1600 pixels" in str(e.value)
    skipping = config_from_dict(folder_config(root, tmp_path / "cache2", skip_bad_images=True)).data
    with pytest.warns(UserWarning, match="skipped 1 undecodable"):
        data = load_datasets(skipping)
    assert "grade0/bad" not in data.train.names and len(data.train.names) == 20


def test_folder_links_cannot_reach_outside_the_root(tmp_path: Path) -> None:
    """A linked image, and a class folder that is a link, leading out of the data root: each
    a problem naming it, and never a training image."""
    from vicreg.data.own import scan_folder

    root = make_folder_set(tmp_path / "imgs", per_class=2)
    outside = tmp_path / "outside"
    _image(outside / "secret.png", 0, 0)
    (root / "grade0" / "linked.png").symlink_to(outside / "secret.png")
    (root / "grade9").symlink_to(outside, target_is_directory=True)
    cfg = config_from_dict(folder_config(root, tmp_path / "cache",
                                         classes=[*(f"grade{i}" for i in range(5)), "grade9"])).data
    files = scan_folder(cfg)
    problems = "\n".join(files.problems)
    assert f"{root / 'grade0' / 'linked.png'}: a link that leads outside" in problems
    assert f"{root / 'grade9' / 'secret.png'}: a link that leads outside" in problems
    assert not any("secret" in p.name or "linked" in p.name for p in files.train)



def test_check_data_takes_a_copy_of_the_folder_study(tmp_path: Path, capsys) -> None:
    """The documented line: `vicreg check-data --config my-set.yaml --data-root DIR` on a copy of
    experiments/folder.yaml (a study file: its base is read)."""
    import shutil

    root = tmp_path / "set"
    for c, n in (("a", 7), ("b", 6)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (20, 20), (40 * i, 90, 9)).save(root / c / f"{i}.png")
    study = tmp_path / "my-set.yaml"
    shutil.copy(REPO / "experiments" / "folder.yaml", study)
    r = vicreg_cli(capsys, "check-data", "--config", str(study), "--data-root", str(root))
    assert r.returncode == 0, r.stderr
    assert "labelled images: 13 (a: 7, b: 6)" in r.stdout
