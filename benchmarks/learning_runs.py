"""The learning benchmark's runs: one data set's recipe (Bench), one run per file under --out
(kept and reused, so an interrupted benchmark goes on where it stopped), several at a time,
and the two printers of their comparisons."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from learning_peer import peer_pretrain

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # devtools/: what the benchmarks share with the tests (not installed)

from devtools.learning import recipe  # noqa: E402
from vicreg.config import Config, get_key  # noqa: E402
from vicreg.data import load_datasets, make_folds, pretrain_selection  # noqa: E402
from vicreg.evaluate import EvalData, EvalReport, evaluate  # noqa: E402
from vicreg.evaluate.baselines import score_baseline  # noqa: E402
from vicreg.train import pretrain  # noqa: E402
from vicreg.verdict import holdout_verdict  # noqa: E402


@dataclass
class Bench:
    """One data set's recipe, images, folds and hold-out, shared by every run."""

    name: str
    epochs: int
    out: Path

    def config(self, overrides: dict | None = None) -> Config:
        return recipe(self.name, {"train.epochs": self.epochs, **(overrides or {})})

    def study_file(self) -> Path:
        return ROOT / "experiments" / f"{self.name}.yaml"


def bench_data(b: Bench, cfg: Config) -> tuple[EvalData, torch.Tensor, dict]:
    """(what the probe scores, what pretraining sees, the record of it) under `cfg`."""
    data = load_datasets(cfg.data)
    folds = make_folds(data.train.names, data.train.labels, cfg.data.folds, cfg.data.fold_seed,
                       b.out / "runs" / "folds.csv", cfg.data.holdout)  # the file the sweep reuses
    images, seen = pretrain_selection(data, folds, cfg.data)  # small sets: one tensor for both trainers
    return EvalData(data.train.images, data.train.labels, folds), images.materialise(), seen


def run_one(b: Bench, kind: str, overrides: dict, seed: int) -> dict:
    """One pretraining run (kind "ours" or "peer") or floor ("untrained", "raw"), probed:
    -> {"report": EvalReport dict, "seconds": pretraining wall time or None}."""
    cfg = b.config({**overrides, "train.seed": seed})
    data, images, _ = bench_data(b, cfg)
    if kind in ("untrained", "raw"):
        r = score_baseline("random-init" if kind == "untrained" else "raw-pixels", cfg, data, "cpu", seed,
                           score_holdout=True)
        return {"report": r.to_dict(), "seconds": None}
    t0 = time.perf_counter()
    if kind == "ours":
        encoder = pretrain(cfg, images).model.encoder
        seconds = time.perf_counter() - t0
    else:
        encoder, seconds = peer_pretrain(cfg, images, seed, workers=0 if torch.get_num_threads() == 1 else 2)
    return {"report": evaluate(encoder, data, cfg.eval, "cpu", kind, score_holdout=True).to_dict(),
            "seconds": seconds}


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _job(args: tuple) -> tuple[str, dict]:
    b, kind, overrides, seed, path = args
    result = run_one(b, kind, overrides, seed)
    result |= {"kind": kind, "overrides": overrides, "seed": seed}
    Path(path).write_text(json.dumps(result, default=float))
    return path, result


def _settled(b: Bench, overrides: dict) -> str:
    """The overrides that change anything from the bench's config, as a stable string: runs of
    the same resolved recipe share one stored file (the 'before' row with zero-init off is the
    default recipe, once the default is off)."""
    base = b.config()
    return json.dumps({k: v for k, v in sorted(overrides.items()) if get_key(base, k) != v}, default=str)


def run_all(b: Bench, jobs: list[tuple[str, str, dict, int]], parallel: int,
            run: bool = True) -> dict[tuple[str, int], dict]:
    """Each (name, kind, overrides, seed) run once, stored as <out>/bench/<kind>-<digest>-seed<s>.json
    and reused by any row or table that asks for the same recipe (with `run` false, only those
    stored); -> {(name, seed): result}."""
    folder = b.out / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    bench_data(b, b.config())  # the folds file, written once before the workers read it
    stored = {}
    for path in folder.glob("*.json"):
        r = json.loads(path.read_text())
        stored[(r["kind"], _settled(b, r["overrides"]), r["seed"])] = r
    todo, done = [], {}
    for name, kind, overrides, seed in jobs:
        key = (kind, _settled(b, overrides), seed)
        if key in stored:
            done[(name, seed)] = stored[key]
        else:
            digest = hashlib.blake2b(key[1].encode(), digest_size=6).hexdigest()
            todo.append(((name, seed), (b, kind, overrides, seed, str(folder / f"{kind}-{digest}-seed{seed}.json"))))
    print(f"{len(done)} runs stored, {len(todo)} to run, {parallel} at a time", flush=True)
    if not run:
        return done
    threads = max(1, (os.cpu_count() or 1) // parallel)
    with ProcessPoolExecutor(parallel, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(_job, args): key for key, args in todo}
        failed = []
        for i, fut in enumerate(futures, 1):
            key = futures[fut]
            try:
                done[key] = fut.result()[1]
            except Exception as e:  # one broken row must not cost the others' hours
                failed.append(f"{key[0]} seed {key[1]}: {type(e).__name__}: {e}")
                print(f"[{i}/{len(todo)}] FAILED {failed[-1]}", flush=True)
                continue
            acc = done[key]["report"]["holdout"]["accuracy"]
            print(f"[{i}/{len(todo)}] {key[0]} seed {key[1]}: hold-out accuracy {acc:.3f}", flush=True)
    if failed:
        raise SystemExit(f"{len(failed)} runs failed (the others are stored): {failed[0]}")
    return done


def reports(done: dict, name: str, seeds: int) -> list[EvalReport]:
    return [EvalReport.from_dict(done[(name, s)]["report"]) for s in range(seeds)]


def pm(v: list[float]) -> str:
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" if len(v) > 1 else f"{v[0]:.3f}"


def versus(mine: list[EvalReport], theirs: list[EvalReport], name: str) -> str:
    """'+0.012 (-0.004..+0.027)': the hold-out accuracy difference and its 95% interval."""
    v = holdout_verdict(mine[0].holdout_labels, [r.holdout_probs for r in mine],
                        [r.holdout_probs for r in theirs], name, metric="accuracy")
    return f"{v.diff:+.3f} ({v.lo:+.3f}..{v.hi:+.3f})"
