"""Downstream evaluation: metrics by hand, folds, oversampling, what each protocol trains,
the probe on a trained encoder, the submission file and the CLI's user errors."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score

from tests.conftest import tiny_config
from tests.helpers import vicreg_cli
from vicreg.__main__ import main as cli_main
from vicreg.augment import channel_stats
from vicreg.data import HOLDOUT, load_datasets, make_folds
from vicreg.data.synthetic import make_synthetic
from vicreg.evaluate import EvalData, EvalReport, evaluate, probe_kappa, scores
from vicreg.evaluate.baselines import RawPixels, baseline_encoder, score_baseline
from vicreg.evaluate.heads import STAGES, FitSpec, ImageSplit, _balanced_indices, _trainable_stages, finetune
from vicreg.evaluate.predict import write_submission
from vicreg.model import build_encoder
from vicreg.train import pretrain

Y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
P = np.array([[.7, .2, .1], [.5, .4, .1], [.2, .5, .3], [.3, .6, .1],
              [.1, .3, .6], [.1, .2, .7], [.2, .3, .5], [.4, .4, .2]])


def _qwk_by_hand(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    obs = np.zeros((k, k))
    for a, b in zip(y, pred):
        obs[a, b] += 1
    w = np.array([[(i - j) ** 2 / (k - 1) ** 2 for j in range(k)] for i in range(k)])
    exp = np.outer(obs.sum(1), obs.sum(0)) / obs.sum()
    return 1 - (w * obs).sum() / (w * exp).sum()


def _auc_pair(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney: P(score of a positive > score of a negative), ties count half."""
    return np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg])


def test_scores_match_hand_computation() -> None:
    m = scores(Y, P)
    pred = P.argmax(1)  # [0 0 1 1 2 2 2 0] against Y = [0 0 0 1 1 2 2 2]
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["kappa"] == pytest.approx(_qwk_by_hand(Y, pred, 3))
    pairs = []
    for i, j in itertools.combinations(range(3), 2):
        # One-vs-one (Hand & Till 2001): class i's score among samples of classes i and j, both ways.
        ai = _auc_pair(P[Y == i, i], P[Y == j, i])
        aj = _auc_pair(P[Y == j, j], P[Y == i, j])
        pairs.append((ai + aj) / 2)
    assert m["auc"] == pytest.approx(np.mean(pairs))
    assert m["recall"] == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert m["confusion"].tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]


def test_two_classes_score_the_positive_class_probability() -> None:
    """Binary sets (referable vs non-referable DR): AUC is the positive class's rank AUC
    (scikit-learn refuses (N, 2) probabilities for two classes), the rest as for C classes."""
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.9, 0.6, 0.7])
    m = scores(y, np.stack([1 - p1, p1], 1))
    assert m["auc"] == pytest.approx(_auc_pair(p1[y == 1], p1[y == 0]))
    assert m["accuracy"] == pytest.approx(6 / 8) and m["confusion"].tolist() == [[3, 1], [1, 3]]
    assert m["kappa"] == pytest.approx(_qwk_by_hand(y, (p1 > 0.5).astype(int), 2))


def test_auc_is_nan_when_a_class_is_missing() -> None:
    assert np.isnan(scores(np.array([0, 1, 0, 1]), P[:4])["auc"])


def test_oversampling_balances_the_classes() -> None:
    labels = np.array([0] * 700 + [1] * 200 + [2] * 100)
    idx = _balanced_indices(labels, torch.Generator().manual_seed(0))
    counts = np.bincount(labels[idx.numpy()], minlength=3)
    assert len(idx) == 1000 and np.all(np.abs(counts - 1000 / 3) < 60)


@pytest.fixture(scope="module")
def small(synthetic_images):
    images, labels = synthetic_images.train.images, synthetic_images.train.labels
    folds = make_folds(synthetic_images.train.names, labels, 3, seed=0)
    return images, labels, folds


def _eval_cfg(**kw):
    return dataclasses.replace(tiny_config().eval, **{"epochs": 2, "batch_size": 16, **kw})


@pytest.mark.parametrize("protocol", ["linear", "head"])
def test_frozen_protocols_score_every_image_once(small, protocol: str) -> None:
    images, labels, folds = small
    torch.manual_seed(0)
    enc = build_encoder(tiny_config().model, 32)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    rep = evaluate(enc, EvalData(images, labels, folds), _eval_cfg(protocol=protocol))
    assert len(rep.folds) == 3
    assert rep.confusion.sum() == len(labels)  # each image validated exactly once: no leak
    assert rep.confusion.sum(1).tolist() == np.bincount(labels).tolist()
    assert all(len(f.curves) >= 1 and {"train_accuracy", "val_kappa"} <= set(f.curves[0]) for f in rep.folds)
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    s = rep.summary
    # Each fold's kappa is its confusion matrix's (an independent formula), and the summary their mean/std.
    from vicreg.verdict import scores_of

    per_fold = [float(scores_of(f.metrics["confusion"], "kappa")) for f in rep.folds]
    assert rep.fold_kappas == pytest.approx(per_fold, abs=1e-12)
    assert (s["kappa_mean"], s["kappa_std"]) == pytest.approx((np.mean(per_fold), np.std(per_fold, ddof=1)))
    assert "recall_2" in s


def _fold_inputs(images, labels, folds):
    mean, std = channel_stats(images)
    tr, va = folds != 0, folds == 0
    return ImageSplit(images[tr], labels[tr], mean=mean, std=std), ImageSplit(images[va], labels[va])


@pytest.mark.parametrize("protocol", ["conv+head", "full"])
def test_unfrozen_protocols_train_only_their_stages(small, protocol: str) -> None:
    images, labels, folds = small
    torch.manual_seed(0)
    enc = build_encoder(tiny_config().model, 32)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = _eval_cfg(protocol=protocol, epochs=5, unfreeze_every=1, patience=0)
    train, val = _fold_inputs(images, labels, folds)
    res = finetune(enc, train, val, FitSpec(3, cfg, protocol, torch.device("cpu"), 0))
    trained = res.encoder
    stage = {"conv1": "stem", "bn1": "stem"}
    moved = set()
    for k, v in trained.state_dict().items():
        if v.dtype.is_floating_point and not torch.equal(before[k], v):
            moved.add(stage.get(k.split(".")[0], k.split(".")[0]))
    if protocol == "conv+head":
        assert moved == {"layer4"}
    else:
        # The kept model is the best epoch's: by then STAGES[:best_epoch] had been unfrozen.
        assert moved == set(STAGES[:min(len(STAGES), res.best_epoch)])


def test_gradual_unfreezing_schedule() -> None:
    cfg = _eval_cfg(protocol="full", unfreeze_every=2)
    got = [_trainable_stages("full", e, cfg) for e in range(10)]
    assert got[0] == got[1] == ["layer4"]
    assert got[2] == ["layer4", "layer3"]
    assert got[8] == got[9] == list(STAGES)
    assert _trainable_stages("conv+head", 7, cfg) == ["layer4"]
    assert _trainable_stages("head", 7, cfg) == []


@pytest.mark.slow  # 4 s of pretraining and three scorings: make test
def test_pretrained_encoder_is_compared_with_random_init_not_chance(tmp_path) -> None:
    # "beats chance" proved nothing: an untrained encoder beats chance here too. The floor is
    # the random-init baseline, scored by the same probe on the same folds.
    make_synthetic(tmp_path / "d", count=150, size=96, seed=5, test_count=0)
    cfg = tiny_config(tmp_path, **{"data.dataset": "synthetic", "data.root": str(tmp_path / "d"),
                                   "train.epochs": 3, "optim.lr": 3e-3, "data.batch_size": 32})
    d = load_datasets(cfg.data)
    folds = make_folds(d.train.names, d.train.labels, 5, seed=0, holdout=0.2)
    r = pretrain(cfg, d.train.images[torch.from_numpy(np.flatnonzero(folds != HOLDOUT))])
    trained = probe_kappa(r.model.encoder, d.train.images, d.train.labels, folds)
    untrained = probe_kappa(baseline_encoder("random-init", cfg, seed=0), d.train.images, d.train.labels, folds)
    assert untrained > 0.2  # so "> chance" was never evidence of learning
    assert trained > untrained


def test_submission_has_a_row_per_test_image_in_name_order(tmp_path) -> None:
    names = ["161.png", "268.png", "1312.png"]
    probs = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05], [1, 1, 2]], dtype=float)
    path = tmp_path / "sub.csv"
    write_submission(names, probs, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "case,class,P0,P1,P2"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == names
    assert [int(r[1]) for r in rows] == [1, 0, 2]
    for r in rows:
        assert sum(float(x) for x in r[2:]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow  # pretraining, then evaluation with both baselines: make test, not make test-fast
def test_cli_evaluate_and_predict_end_to_end(synthetic_root, tmp_path, capsys) -> None:
    ckpt_dir = tmp_path / "ckpt"
    sets = ["--set", "data.dataset=synthetic", "--set", f"data.root={synthetic_root}",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.image_size=32",
            "--set", "data.batch_size=16", "--set", "model.expander_hidden=64", "--set", "model.small_stem=false",
            "--set", "model.expander_out=64", "--set", "train.epochs=1", "--set", "train.progress=false",
            "--set", f"train.checkpoint_dir={ckpt_dir}", "--set", "optim.name=adam",
            "--set", "optim.lr=0.001", "--set", "eval.epochs=2", "--set", "data.folds=3"]
    # In this process: the same argument parsing, exit codes and printed report, without a second
    # torch import (the installed `vicreg` runs in tests/test_docs.py).
    assert cli_main(["pretrain", *sets]) == 0
    r = vicreg_cli(capsys, "evaluate", "--checkpoint", str(ckpt_dir / "last.pt"), "--out", str(tmp_path / "eval"))
    assert r.returncode == 0, r.stderr
    for label in ("vicreg (linear)", "random-init (linear)", "raw-pixels (linear)"):
        assert label in r.stdout
    rows = [line.strip() for line in r.stdout.splitlines()]
    for row in ("CV mean", "CV std (ddof=1)", "pooled out-of-fold", "hold-out"):
        assert sum(line.startswith(row + " ") for line in rows) == 3
    verdicts = [line for line in r.stdout.splitlines() if line.startswith("pretraining vs ")]
    assert [v.split(":")[0] for v in verdicts] == [
        "pretraining vs random-init on the hold-out", "pretraining vs raw-pixels on the hold-out",
        "pretraining vs random-init on the CV folds (optimistic)",
        "pretraining vs raw-pixels on the CV folds (optimistic)"]
    for v in verdicts[:2]:  # one checkpoint: its words follow the printed interval and speak of it alone
        lo, hi = (float(x) for x in re.search(r"95% CI ([-+.\d]+)\.\.([-+.\d]+),", v).groups())
        assert "x 1 seed)" in v and "(one seed: about this checkpoint, not pretraining" in v, v
        if lo > 0 or hi < 0:
            assert f": this checkpoint did {'better' if lo > 0 else 'worse'} (" in v, v
    assert all(v.endswith(", not a verdict") for v in verdicts[2:])  # the CV lines carry no words
    head = next(line for line in r.stdout.splitlines() if line.startswith("verdict: "))
    assert head.startswith("verdict: this checkpoint ") and "confirm with 3+ seeds for a verdict" in head
    assert re.search(r"^quote: hold-out kappa [-.\d]+ \(95% CI [-.\d]+\.\.[-.\d]+, \d+ images x 1 seed\), "
                     r"this checkpoint$", r.stdout, re.M)
    assert "but not the hold-out's: the CV verdict includes that advantage" in r.stdout
    assert "pretraining saw" in r.stdout and "hold-out images" in r.stdout
    assert (tmp_path / "eval" / "vicreg_confusion.png").is_file()
    assert (tmp_path / "eval" / "folds.csv").is_file()
    sub = tmp_path / "sub.csv"
    assert cli_main(["predict", "--checkpoint", str(ckpt_dir / "last.pt"), "--out", str(sub)]) == 0
    rows = sub.read_text().splitlines()
    test_names = sorted(p.name for p in synthetic_root.rglob("b. Testing Set/*.png"))
    assert rows[0] == "case,class,P0,P1,P2" and sorted(x.split(",")[0] for x in rows[1:]) == test_names


def test_cli_user_errors_are_one_line(tmp_path, capsys) -> None:
    r = vicreg_cli(capsys, "evaluate", "--checkpoint", str(tmp_path / "missing.pt"))
    expected = f"error: checkpoint {tmp_path / 'missing.pt'} does not exist"
    assert r.returncode == 2 and r.stderr.strip() == expected
    r = vicreg_cli(capsys, "evaluate", "--checkpoint", str(tmp_path / "x.pt"), "--set", "eval.protocol=svm")
    assert r.returncode == 2
    (tmp_path / "c.yaml").write_text("eval:\n  protocol: svm\n")
    r = vicreg_cli(capsys, "evaluate", "--config", str(tmp_path / "c.yaml"), "--checkpoint", str(tmp_path / "x.pt"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "eval.protocol='svm' must be linear, head, conv+head or full" in r.stderr


class _Scaled(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.factor


def test_frozen_scores_do_not_depend_on_the_feature_scale(small) -> None:
    # A random-init encoder's features are tiny; unscaled, a linear head learned nothing from
    # them and the random-init baseline always scored kappa 0. Standardised, scale is irrelevant.
    images, labels, folds = small
    torch.manual_seed(0)
    enc = build_encoder(tiny_config().model, 32)
    cfg = _eval_cfg(protocol="linear", epochs=3)
    a = evaluate(enc, EvalData(images, labels, folds), cfg).summary
    b = evaluate(_Scaled(enc, 1e-4), EvalData(images, labels, folds), cfg).summary
    assert a["kappa_mean"] == pytest.approx(b["kappa_mean"], abs=1e-6)
    assert a["accuracy_mean"] == pytest.approx(b["accuracy_mean"], abs=1e-6)


# --- no selection on scored data; the hold-out; pooled kappa ---------------------------


@pytest.fixture(scope="module")
def with_holdout(synthetic_images):
    images, labels = synthetic_images.train.images, synthetic_images.train.labels
    folds = make_folds(synthetic_images.train.names, labels, 3, seed=0, holdout=0.25)
    torch.manual_seed(0)
    return images, labels, folds, build_encoder(tiny_config().model, 32)


def test_holdout_is_never_fitted_and_scored_only_when_asked(with_holdout) -> None:
    images, labels, folds, enc = with_holdout
    cfg = _eval_cfg(protocol="linear", epochs=3)
    rep = evaluate(enc, EvalData(images, labels, folds), cfg)
    hold = folds == HOLDOUT
    assert rep.holdout is None and rep.confusion.sum() == (~hold).sum()  # CV: every CV image once
    # The hold-out's labels (and images) change nothing in the CV scores: nothing was fitted on them.
    other = labels.copy()
    other[hold] = (other[hold] + 1) % 3
    again = evaluate(enc, EvalData(images, other, folds), cfg, score_holdout=True)
    assert again.summary["kappa_mean"] == pytest.approx(rep.summary["kappa_mean"], abs=1e-9)
    assert again.holdout["confusion"].sum() == hold.sum()
    scored = evaluate(enc, EvalData(images, labels, folds), cfg, score_holdout=True).holdout
    assert scored["confusion"].sum(1).tolist() == np.bincount(labels[hold], minlength=3).tolist()


def test_normalisation_statistics_come_from_training_images_only(with_holdout) -> None:
    """The hold-out's pixels enter nothing fitted: brightening them changes neither the probe
    nor any fold's validation predictions (the frozen protocols normalise with the CV images'
    statistics). Fine-tuning normalises each fold with its training part: brightening fold 0's
    validation images changes nothing in the model fold 0 trains, so its hold-out predictions
    stay, while fold 1's (which trains on them) move."""
    images, labels, folds, enc = with_holdout
    brighter = images.clone()
    hold = torch.from_numpy(folds == HOLDOUT)
    brighter[hold] = (brighter[hold].float() * 0.5 + 100).to(torch.uint8)
    assert probe_kappa(enc, brighter, labels, folds) == probe_kappa(enc, images, labels, folds)
    cfg = _eval_cfg(protocol="linear", epochs=2, augment=False)
    rep = evaluate(enc, EvalData(images, labels, folds), cfg, score_holdout=True)
    again = evaluate(enc, EvalData(brighter, labels, folds), cfg, score_holdout=True)
    for a, b in zip(rep.folds, again.folds):
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-6)
    cfg = _eval_cfg(protocol="conv+head", epochs=1, augment=False)
    rep = evaluate(enc, EvalData(images, labels, folds), cfg, score_holdout=True)
    val0 = torch.from_numpy(folds == 0)
    changed = images.clone()
    changed[val0] = (changed[val0].float() * 0.5 + 100).to(torch.uint8)
    again = evaluate(enc, EvalData(changed, labels, folds), cfg, score_holdout=True)
    np.testing.assert_allclose(again.folds[0].predictions["holdout"], rep.folds[0].predictions["holdout"], atol=1e-5)
    assert not np.allclose(again.folds[1].predictions["holdout"], rep.folds[1].predictions["holdout"], atol=1e-5)


def test_pooled_kappa_is_one_kappa_over_all_out_of_fold_predictions(with_holdout) -> None:
    images, labels, folds, enc = with_holdout
    rep = evaluate(enc, EvalData(images, labels, folds), _eval_cfg(protocol="linear", epochs=2))
    y = np.concatenate([labels[folds == f.fold] for f in rep.folds])
    pred = np.concatenate([f.probs.argmax(1) for f in rep.folds])
    assert rep.pooled["kappa"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))
    kappas = [f.metrics["kappa"] for f in rep.folds]
    assert rep.summary["kappa_std"] == pytest.approx(np.std(kappas, ddof=1))  # sample std


@pytest.mark.parametrize("patience", [0, 2])
def test_the_scored_fold_chooses_nothing(with_holdout, patience: int) -> None:
    # Fixed epochs (patience 0) or early stopping on an inner split: relabelling the scored
    # fold's images changes neither the kept epoch nor any prediction.
    images, labels, folds, enc = with_holdout
    cfg = _eval_cfg(protocol="head", epochs=6, patience=patience)
    a = evaluate(enc, EvalData(images, labels, folds), cfg)
    other = labels.copy()
    val = folds == 0
    other[val] = (other[val] + 1) % 3
    b = evaluate(enc, EvalData(images, other, folds), cfg)
    assert a.folds[0].best_epoch == b.folds[0].best_epoch
    assert np.array_equal(a.folds[0].probs, b.folds[0].probs)
    if patience == 0:
        assert all(f.best_epoch == 6 for f in a.folds)
    else:
        assert all("inner_kappa" in c for f in a.folds for c in f.curves)


# --- baselines --------------------------------------------------------------------


def _features(enc: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return enc.eval()(images[:8].float() / 255)


def test_random_init_residual_branches_contribute() -> None:
    cfg = tiny_config()
    enc = baseline_encoder("random-init", cfg, seed=0)
    stem_only = copy.deepcopy(enc)
    for m in stem_only.modules():  # what zero-init residuals do: every branch's last BN weight is 0
        if hasattr(m, "bn2") and hasattr(m, "conv2"):
            torch.nn.init.zeros_(m.bn2.weight)
    x = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8)
    assert not torch.allclose(_features(enc, x), _features(stem_only, x), atol=1e-3)
    # And it is torchvision's default construction, not the zero-init one VICReg trains from.
    assert all(float(m.bn2.weight.abs().sum()) > 0 for m in enc.modules() if hasattr(m, "bn2"))


def test_raw_pixels_are_pooled_to_32_px() -> None:
    x = torch.arange(2 * 64 * 64, dtype=torch.float32).reshape(2, 1, 64, 64)
    f = RawPixels()(x)
    assert f.shape == (2, 1024)
    assert f[0, 0] == pytest.approx(float(x[0, 0, :2, :2].mean()))
    assert RawPixels()(x[:, :, :16, :16]).shape == (2, 256)


def test_random_init_far_above_chance_where_random_features_separate(tmp_path) -> None:
    # The synthetic grades differ in blob count and contrast: random convolutional features
    # separate them, so an honest random-init baseline must score far above chance (0).
    make_synthetic(tmp_path / "d", count=150, size=96, seed=1, test_count=0)
    cfg = tiny_config(tmp_path, **{"data.dataset": "synthetic", "data.root": str(tmp_path / "d"),
                                   "data.image_size": 32, "model.small_stem": "null"})  # the default's stem
    d = load_datasets(cfg.data)
    folds = make_folds(d.train.names, d.train.labels, 5, seed=0, holdout=0.2)
    kappa = probe_kappa(baseline_encoder("random-init", cfg, seed=0), d.train.images, d.train.labels, folds)
    assert kappa > 0.5


def test_baselines_are_scored_once_and_reused(with_holdout, tmp_path, monkeypatch) -> None:
    images, labels, folds, _ = with_holdout
    cfg = dataclasses.replace(tiny_config(), eval=_eval_cfg(protocol="linear", epochs=2))
    first = score_baseline("raw-pixels", cfg, EvalData(images, labels, folds), cache_dir=tmp_path)
    stored = list(tmp_path.glob("raw-pixels-*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["label"] == "raw-pixels"

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr("vicreg.evaluate.baselines.evaluate", boom)
    again = score_baseline("raw-pixels", cfg, EvalData(images, labels, folds), cache_dir=tmp_path)
    assert again.fold_kappas == first.fold_kappas and again.pooled["kappa"] == first.pooled["kappa"]
    with pytest.raises(AssertionError, match="recomputed"):  # another head seed is another baseline
        score_baseline("raw-pixels", dataclasses.replace(cfg, eval=_eval_cfg(protocol="linear", epochs=2, seed=1)),
                       EvalData(images, labels, folds), cache_dir=tmp_path)
    assert EvalReport.from_dict(first.to_dict()).summary == pytest.approx(first.summary, nan_ok=True)


def test_baseline_key_follows_everything_that_changes_a_floor(tmp_path, monkeypatch) -> None:
    """The weights file's content (same path), the device type and precision, and the code and
    library versions the baseline runs through each give another key."""
    import vicreg.evaluate.baselines as B

    weights = tmp_path / "resnet18.pth"
    torch.save(build_encoder(tiny_config().model, 32).state_dict(), weights)
    cfg = tiny_config(**{"eval.imagenet_weights": str(weights)})
    key = B.baseline_key("imagenet", cfg, "data", 0)
    assert B.baseline_key("imagenet", cfg, "data", 0) == key
    time.sleep(0.01)
    torch.save({k: v + 1 for k, v in torch.load(weights, weights_only=True).items()}, weights)
    assert B.baseline_key("imagenet", cfg, "data", 0) != key  # same path, other weights
    key = B.baseline_key("imagenet", cfg, "data", 0)
    assert B.baseline_key("imagenet", cfg, "data", 0, device="cuda") != key
    raw = B.baseline_key("raw-pixels", cfg, "data", 0)
    monkeypatch.setattr(B, "RAW_PIXELS_SIDE", 16)
    assert B.baseline_key("raw-pixels", cfg, "data", 0) != raw
    monkeypatch.setattr(B, "source_digest", lambda: "other code")
    assert B.baseline_key("imagenet", cfg, "data", 0) != key


def test_small_stem_with_imagenet_weights_is_a_one_line_error(tmp_path) -> None:
    from vicreg.config import ConfigError

    with pytest.raises(ConfigError, match="model.small_stem=True cannot be true with model.init=imagenet"):
        tiny_config(**{"model.init": "imagenet", "model.small_stem": True})


def test_the_curve_scores_are_scikit_learns() -> None:
    """curve_scores (one confusion matrix, no input validation) against scikit-learn's own
    accuracy, quadratic kappa and macro-F1, on random labels with a class never predicted and
    one never true."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

    from vicreg.evaluate.metrics import curve_scores

    rng = np.random.default_rng(3)
    for _ in range(20):
        y, pred = rng.integers(0, 4, 50), rng.integers(0, 3, 50)  # class 3 is never predicted
        y[y == 2] = 1  # class 2 is never true
        got = curve_scores(y, pred, 4)
        assert got["accuracy"] == pytest.approx(accuracy_score(y, pred))
        assert got["kappa"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic", labels=[0, 1, 2, 3]))
        assert got["f1"] == pytest.approx(f1_score(y, pred, labels=[0, 1, 2, 3], average="macro", zero_division=0))


def test_the_scores_file_has_one_format_for_evaluate_and_the_sweep(tmp_path) -> None:
    """folds_scores.csv (docs/results.md): a row per model and CV fold with the kept epoch, then
    pooled and hold-out rows without one; the sweep's run artifacts write the same text."""
    import csv
    import io

    from sweeps.tracking.runs import write_artifacts
    from vicreg.evaluate import EvalReport, FoldResult, scores_csv
    from vicreg.train import PretrainResult

    m0 = {"kappa": 0.5, "f1": 0.25, "accuracy": 0.75, "auc": 0.125}
    vic = EvalReport("vicreg", "linear", [FoldResult(0, m0, best_epoch=3), FoldResult(1, {**m0, "kappa": 0.0})],
                     pooled={**m0, "kappa": 0.375}, holdout={**m0, "auc": float("nan")})
    base = EvalReport("random-init", "linear", [FoldResult(0, m0, best_epoch=1)])
    rows = list(csv.reader(io.StringIO(scores_csv([vic, base]))))
    assert rows == [["model", "split", "kappa", "f1", "accuracy", "auc", "epoch"],
                    ["vicreg", "fold 0", "0.500000", "0.250000", "0.750000", "0.125000", "3"],
                    ["vicreg", "fold 1", "0.000000", "0.250000", "0.750000", "0.125000", "0"],
                    ["vicreg", "pooled", "0.375000", "0.250000", "0.750000", "0.125000", ""],
                    ["vicreg", "holdout", "0.500000", "0.250000", "0.750000", "nan", ""],
                    ["random-init", "fold 0", "0.500000", "0.250000", "0.750000", "0.125000", "1"]]
    cfg = tiny_config(tmp_path)
    write_artifacts(tmp_path, cfg, PretrainResult(None, "completed", "", 1, 1, 0.0), [vic, base], plots=False,
                    checkpoint=False)
    assert (tmp_path / "folds_scores.csv").read_text() == scores_csv([vic, base])
