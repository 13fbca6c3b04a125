"""Files we read never run code: for each loader (pretraining and trial checkpoints, the
confirm-stage encoder, a sweep run's encoder.pt, the registry model, a CIFAR-10 batch), a
crafted file whose unpickling would create a marker file. The marker must stay absent and
the user gets one line. Malformed but harmless files are one line too; an older file that
needs full unpickling is converted only with --trust."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.conftest import tiny_config
from vicreg import checkpoint
from vicreg.__main__ import main as cli_main
from vicreg.checkpoint import load_encoder_checkpoint, read_checkpoint
from vicreg.config import flatten
from vicreg.errors import CheckpointError, DataError, UnsafeCheckpoint
from vicreg.model import build_encoder
from vicreg.train import resume_state


class Marker:
    """Unpickling this calls open(path, "w"): the file appears if any code from the file runs."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _encoder_file(path: Path, extra: object = None, **over) -> Path:
    """A sweep run's checkpoint/encoder.pt (weights + flattened config), optionally carrying `extra`."""
    cfg = tiny_config()
    state = {"encoder": build_encoder(cfg.model, 32).state_dict(), "config": flatten(cfg), **over}
    if extra is not None:
        state["extra"] = extra
    torch.save(state, path)
    return path


def _one_line_error(capsys, argv: list[str]) -> str:
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_crafted_checkpoint_runs_nothing_in_evaluate_and_predict(tmp_path, capsys) -> None:
    marker = tmp_path / "marker"
    crafted = _encoder_file(tmp_path / "their.pt", Marker(marker))
    for cmd in (["evaluate", "--checkpoint", str(crafted)], ["predict", "--checkpoint", str(crafted), "--out",
                                                             str(tmp_path / "s.csv")]):
        line = _one_line_error(capsys, cmd)
        assert str(crafted) in line and "refused" in line and "io.open" in line
        assert "it cannot be converted: io.open is not plain data" in line and "--trust" not in line
    assert not marker.exists()


def test_crafted_pretraining_or_trial_checkpoint_is_set_aside_unrun(tmp_path) -> None:
    """pretrain's resume and a sweep trial's retry both read through read_checkpoint/resume_state."""
    marker = tmp_path / "marker"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"model": {}, "optimizer": {}, "epoch": 0, "step": 0, "best": 1.0, "wait": 0, "history": [],
                "key": Marker(marker)}, folder / "last.pt")
    cfg = tiny_config(**{"train.checkpoint_dir": str(folder)})
    with pytest.warns(UserWarning, match=r"last.pt: refused: .*io.open.*starting from scratch"):
        assert resume_state(cfg) is None
    assert not marker.exists() and not (folder / "last.pt").exists()
    assert len(list(folder.glob("last.pt.corrupt-*"))) == 1


def test_crafted_confirm_encoder_is_not_registered(tmp_path, capsys, monkeypatch) -> None:
    from sweeps.confirm import _encoder_path, register_best

    marker = tmp_path / "marker"
    registered = []
    monkeypatch.setattr("sweeps.confirm.best_version", lambda tr, name: None)
    monkeypatch.setattr("sweeps.confirm.register_encoder", lambda *a, **k: registered.append(a))
    ctx = SimpleNamespace(tracking=object(), out_dir=tmp_path, spec=SimpleNamespace(name="s"))
    path = _encoder_path(ctx, 3)
    path.parent.mkdir(parents=True)
    _encoder_file(path, Marker(marker), example=torch.zeros(2, 1, 32, 32))
    register_best(ctx, [{"trial": 3, "mlflow_run_ids": ["r"], "seed_values": [1000], "scores": {}}])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("model registry: ") and "refused" in out[0], out
    assert not registered and not marker.exists() and not path.exists()


def test_crafted_registry_models_run_nothing(tmp_path, new_store) -> None:
    """A model version whose weights file is crafted, and one logged as a pickled Python model:
    our --predict path refuses both in one line, and MLflow's own loader refuses ours."""
    import mlflow
    import mlflow.pyfunc

    from sweeps.tracking import Tracking, load_encoder

    marker = tmp_path / "marker"
    uri = new_store(tmp_path)
    mlflow.set_tracking_uri(uri)
    tracking = Tracking.open(uri, "s")
    data = tmp_path / "encoder"
    data.mkdir()
    _encoder_file(data / "encoder.pt", Marker(marker))

    class Pickled(mlflow.pyfunc.PythonModel):
        def __reduce__(self):
            return open, (str(marker), "w")

    # pip_requirements given, as sweeps/tracking/registry.py gives them: MLflow otherwise infers them
    # in a subprocess that loads the model (seconds, and beside the point here).
    with mlflow.start_run(experiment_id=tracking.experiment_id):
        ours = mlflow.pyfunc.log_model(name="a", loader_module="sweeps.pyfunc_encoder", data_path=str(data),
                                       pip_requirements=[])
        pickled = mlflow.pyfunc.log_model(name="b", python_model=Pickled(), pip_requirements=[])
    marker.unlink(missing_ok=True)  # cloudpickle called __reduce__ while logging; loading must not
    for info, match in ((ours, r"encoder.pt: refused: .*io.open"), (pickled, "not a weights-only")):
        version = mlflow.register_model(info.model_uri, f"m-{info.name}")
        with pytest.raises(CheckpointError, match=match) as e:
            load_encoder(tracking, f"models:/m-{info.name}/{version.version}")
        assert "\n" not in str(e.value)
    with pytest.raises(UnsafeCheckpoint):
        mlflow.pyfunc.load_model(ours.model_uri)
    assert not marker.exists()


def test_crafted_cifar_batch_runs_nothing(tmp_path) -> None:
    from vicreg.data import load_datasets

    marker = tmp_path / "marker"
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}
        if name == "data_batch_1":
            batch["filenames"] = Marker(marker)
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    cfg = tiny_config(**{"data.dataset": "cifar10", "data.root": str(tmp_path)}).data
    with pytest.raises(DataError, match=r"data_batch_1: refused: it names io.open") as e:
        load_datasets(cfg)
    assert "\n" not in str(e.value) and not marker.exists()


def _shared_lists(depth: int) -> list:
    """A list whose every level holds the level below twice: tiny as a pickle (shared
    references), 2**depth elements once turned into an array."""
    x: list = [0]
    for _ in range(depth):
        x = [x, x]
    return x


@pytest.mark.parametrize("batch, words", [
    ({"data": _shared_lists(40), "labels": [0, 1]}, r"'data' must be a uint8 array of shape \(N, 3072\), not a list"),
    ({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, "dtype float32"),
    ({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, r"shape \(2, 100\)"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "'labels' must be 2 integers .* got 1"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 12]}, "label 1 is 12"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, "cat"]}, "label 1 is 'cat'"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": _shared_lists(40)}, "label 0 is a list"),
], ids=["shared-lists", "float-data", "wrong-shape", "short-labels", "label-12", "string-label", "nested-labels"])
def test_malformed_cifar_batches_are_one_line(tmp_path, batch: dict, words: str) -> None:
    """Checked before any array is built: a 2**40-element nested list is refused at once."""
    from vicreg.data import load_datasets

    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    cfg = tiny_config(**{"data.dataset": "cifar10", "data.root": str(tmp_path)}).data
    with pytest.raises(DataError, match=words) as e:
        load_datasets(cfg)
    assert "\n" not in str(e.value) and "data_batch_1" in str(e.value)


@pytest.mark.parametrize("data_path", ["/etc", "../../../../outside/encoder", "encoder/../../escape"])
def test_a_registry_mlmodel_cannot_lead_outside_its_folder(tmp_path, monkeypatch, new_store,
                                                          data_path: str) -> None:
    """A crafted MLmodel naming our loader and a data path that is absolute or climbs out of
    the downloaded model folder: refused in one line, nothing outside is read."""
    import mlflow

    from sweeps.tracking import Tracking, load_encoder

    monkeypatch.chdir(tmp_path)
    uri = new_store(tmp_path)
    mlflow.set_tracking_uri(uri)
    tracking = Tracking.open(uri, "s")
    model = tmp_path / "model"
    model.mkdir()
    (model / "MLmodel").write_text(f"flavors:\n  python_function:\n    loader_module: sweeps.pyfunc_encoder\n"
                                   f"    data: {data_path}\n")
    with mlflow.start_run(experiment_id=tracking.experiment_id) as run:
        mlflow.log_artifacts(str(model), artifact_path="m")
    with pytest.raises(CheckpointError, match="leads outside the model folder") as e:
        load_encoder(tracking, f"runs:/{run.info.run_id}/m")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("make, words", [
    (lambda p: p.write_bytes(b""), "the file is empty"),
    (lambda p: p.write_text("not a checkpoint\n"), "unreadable, truncated or not a torch file"),
    (lambda p: p.write_bytes(_encoder_file(p).read_bytes()[:4000]), "unreadable, truncated or not a torch file"),
    (lambda p: torch.save({"weights": {}}, p), "not a VICReg checkpoint: expected 'model' and 'config'"),
    (lambda p: torch.save([1, 2], p), "holds a list, not a dict of weights"),
    (lambda p: _encoder_file(p, encoder=torch.nn.Linear(3, 4).state_dict()),
     r"do not fit this encoder: \d+ missing \(e.g. 'conv1.weight'\), 2 unexpected \(e.g. 'weight'\)"),
    (lambda p: _encoder_file(p, encoder={k: v[..., :1] if v.ndim == 4 else v for k, v in
                                         build_encoder(tiny_config().model, 32).state_dict().items()}),
     r"\d+ of another shape \(e.g. 'conv1.weight': \(64, 1, 7, 1\) in the file, \(64, 1, 7, 7\) in the encoder\)"),
])
def test_malformed_files_are_one_line(tmp_path, capsys, make, words: str) -> None:
    path = tmp_path / "bad.pt"
    make(path)
    line = _one_line_error(capsys, ["evaluate", "--checkpoint", str(path)])
    assert line.startswith(f"error: {path}") and __import__("re").search(words, line), line


def test_an_older_file_is_converted_only_with_trust(tmp_path, capsys) -> None:
    """A file whose history holds numpy scalars (as an earlier version could write) needs full
    unpickling: refused with the command; the command wants --trust; then it reads as weights."""
    path = _encoder_file(tmp_path / "old.pt", history=[{"loss": np.float64(1.5)}])
    with pytest.raises(UnsafeCheckpoint, match="numpy"):
        checkpoint.load(path)
    line = _one_line_error(capsys, ["convert-checkpoint", str(path)])
    assert "pass --trust" in line
    assert cli_main(["convert-checkpoint", "--trust", str(path)]) == 0
    assert "rewritten as plain data" in capsys.readouterr().out
    state = checkpoint.load(path)
    assert state["history"] == [{"loss": 1.5}] and type(state["history"][0]["loss"]) is float
    assert (tmp_path / "old.pt.pickled").is_file()
    raw, encoder = load_encoder_checkpoint(path)
    assert raw["model"]["arch"] == "resnet18" and not encoder.training


class Payload:
    """Unpickling this calls `func(code)`: exec's or cProfile.run's argument runs."""

    def __init__(self, func, code: str) -> None:
        self.func, self.code = func, code

    def __reduce__(self):
        return self.func, (self.code,)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
@pytest.mark.parametrize("func", [exec, __import__("cProfile").run], ids=["builtins.exec", "cProfile.run"])
def test_trust_converts_nothing_that_runs_code(tmp_path, capsys, fmt: str, func) -> None:
    """A file that also names numpy scalars (so converting looks plausible) and a function
    that runs its argument: `convert-checkpoint --trust` refuses it with every name it holds,
    in both torch formats, and the payload never runs; the refusal line of evaluate names them
    all and does not recommend --trust."""
    marker = tmp_path / "ran"
    path = tmp_path / "their.pt"
    state = {"history": [{"loss": np.float64(1.5)}], "extra": Payload(func, f"open({str(marker)!r}, 'w')")}
    torch.save(state, path, _use_new_zipfile_serialization=fmt == "zip")
    names = checkpoint.file_globals(path)
    (name,) = [n for n in names if n.endswith(f".{func.__name__}")]  # builtins.exec is __builtin__.exec in protocol 2
    assert name in (f"{func.__module__}.{func.__name__}", f"__builtin__.{func.__name__}")
    line = _one_line_error(capsys, ["convert-checkpoint", "--trust", str(path)])
    assert f"refused even with --trust: it names {name}" in line, line
    line = _one_line_error(capsys, ["evaluate", "--checkpoint", str(path)])
    assert name in line and "scalar" in line and "--trust" not in line, line
    assert not marker.exists() and path.is_file() and not (tmp_path / "their.pt.pickled").exists()


def test_hidden_names_are_refused() -> None:
    """A STACK_GLOBAL whose module and name are not the two strings just before it cannot be
    read statically: it is named '<hidden>', which nothing allows."""
    import io
    import pickle as pk

    data = b"\x80\x04" + pk.SHORT_BINUNICODE + b"\x08builtins" + pk.EMPTY_TUPLE + pk.POP + \
        pk.SHORT_BINUNICODE + b"\x04exec" + pk.EMPTY_LIST + pk.POP + pk.STACK_GLOBAL + pk.STOP
    assert checkpoint._opcode_globals(io.BytesIO(data)) == ["<hidden>"]
    assert not checkpoint.allowed("<hidden>") and not checkpoint.allowed("builtins.exec")
    assert checkpoint.allowed("numpy.dtypes.Float64DType") and checkpoint.allowed("vicreg.config.Config")


def test_what_we_write_reads_back_as_weights_only(tmp_path) -> None:
    """pretrain's own checkpoint (optimizer state, history, config) is plain data."""
    from vicreg.train import pretrain

    cfg = tiny_config(**{"train.epochs": 1, "train.checkpoint_dir": str(tmp_path / "c")})
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=8))
    pretrain(cfg, torch.randint(0, 255, (16, 1, 32, 32), dtype=torch.uint8))
    state = read_checkpoint(tmp_path / "c" / "last.pt")
    assert state is not None and state["epoch"] == 0 and "state" in state["optimizer"]


def test_a_checkpoints_stored_paths_decide_nothing_we_write(tmp_path) -> None:
    """evaluate and predict build their config from the checkpoint's: its cache_dir, folds_file
    and checkpoint_dir are reset to the defaults, and the command line's --set still wins."""
    import argparse

    from vicreg.__main__ import _config
    from vicreg.config import Config

    raw = dataclasses.asdict(tiny_config())
    raw["data"] |= {"cache_dir": str(tmp_path / "planted"), "folds_file": str(tmp_path / "planted.csv")}
    raw["train"]["checkpoint_dir"] = str(tmp_path / "planted-ckpt")
    args = argparse.Namespace(set=[], config=None, checkpoint="their.pt")
    cfg = _config(args, base=raw)
    assert (cfg.data.cache_dir, cfg.data.folds_file, cfg.train.checkpoint_dir) == (Config().data.cache_dir, None, None)
    assert cfg.data.image_size == 32  # the rest of the stored config stands
    args.set = [f"data.cache_dir={tmp_path / 'mine'}"]
    assert _config(args, base=raw).data.cache_dir == str(tmp_path / "mine")
