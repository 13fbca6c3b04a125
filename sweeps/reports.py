"""What a study reports, in words: `--best`'s table, the verdict lines, the parent run's Markdown
report, the confirmed ranking, and the per-trial timing summary. Read from the best file
(sweeps/best.py) and the trials' timing file; nothing here decides anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .best import QUOTE, best_file, read_best
from .text import mask_url
from .tracking import runs_page

if TYPE_CHECKING:
    from .study import StudySpec


def print_best(spec: StudySpec) -> int:
    """`--best`: the top trials (CV), the baselines, the confirmed ranking, verdict and quote."""
    path = best_file(spec)
    doc = read_best(path)
    if doc is None:
        print(f"no completed trials yet for study '{spec.name}' ({path} does not exist)")
        return 1
    params, m = list(doc["top"][0]["params"]), doc.get("primary", "kappa")
    print(f"study {doc['study']}: trials ranked by {doc['metric']} ({doc['direction']}) on the CV folds, "
          f"the score they were selected on (optimistic); updated {doc['updated']}")
    print(f"{'rank':>4} {'trial':>5} {'CV value':>8}  {'CV ' + m:>17}  " + "  ".join(params))
    for e in doc["top"]:
        vals = "  ".join(_fmt(e["params"].get(k, "-")) for k in params)
        print(f"{e['rank']:>4} {e['trial']:>5} {e['value']:8.4f}  {e.get(m, '-'):>17}  {vals}")
    floors = doc["top"][0].get(f"baselines_cv_{m}") or {}
    if floors:
        print("baselines on the same CV folds and head seed, no pretraining: "
              + ", ".join(f"{k} CV {m} {v:.4f}" for k, v in floors.items()))
    print(f"rerun the best: {doc['rerun']}")
    confirmed = doc.get("confirmed") or []
    if confirmed:
        print(confirmed_table(confirmed, doc.get("confirm_seeds", 0)))
        print()
        print("\n".join(verdict_lines(doc)))
    else:
        print(f"not confirmed yet: vicreg-sweep --config {spec.path} --confirm")
    return 0


def verdict_lines(doc: dict) -> list[str]:
    """The headline, first and last line in bold where rendered: the primary verdict; the
    hold-out verdict against each baseline and the optimistic CV lines; what more seeds could
    change; and the number to quote (--best, the notebooks, the parent run's description)."""
    head = doc.get("headline") or {}
    if not doc.get("confirmed"):
        return []
    if not head:
        return ["no headline in this best file (written before it existed): rerun --confirm (stored runs are reused)"]
    seeds = ", ".join(str(s) for s in head.get("seed_values", []))
    ranked = len(doc["confirmed"]) > 1
    lines = [doc.get("primary_verdict") or "verdict: none (data.holdout = 0: no hold-out, no verdict)",
             f"  confirmed best: trial {head['trial']}, seeds {seeds}"
             + (" (not the seeds that ranked it: no winner's curse)" if ranked else "")
             + "; each baseline paired under the same seeds:"]
    lines += [f"  {line}" for line in doc["verdict"]]
    lines += [f"  {line}" for line in doc.get("cv_verdict", [])]
    if doc.get("pretraining_saw"):
        lines.append(f"  ({doc['pretraining_saw']})")
    lines += [f"  {line}" for line in doc.get("more_seeds", [])]
    quote = doc.get("quote_score") or "no hold-out score"
    lines.append(f"quote: {quote}, confirmed best (trial {head['trial']}), with the verdict above")
    return lines


def study_report(doc: dict) -> str:
    """The study's short report in Markdown (the parent run's description, which MLflow renders
    on the run page): the verdicts, the confirmed table and the number to quote."""
    lines = [f"## Study {doc['study']}", ""]
    confirmed = doc.get("confirmed") or []
    if not confirmed:
        return "\n".join([*lines, "Not confirmed yet: the verdict comes with the confirm stage."])
    verdicts = verdict_lines(doc)
    if len(verdicts) < 2:
        return "\n".join([*lines, *verdicts])
    lines += [f"**{verdicts[0]}**", ""]
    lines += [f"- {v.strip()}" for v in verdicts[1:-1]]
    lines += ["", f"**{verdicts[-1]}**", "", "```", confirmed_table(confirmed, doc.get("confirm_seeds", 0)).strip(),
              "```", "", doc.get("quote", QUOTE)]
    return "\n".join(lines)


def confirmed_table(confirmed: list[dict], seeds: int) -> str:
    """The confirm stage's ranking: VICReg and each baseline, CV / pooled / hold-out score (the
    data's primary: kappa, or f1 for unordered classes)."""
    labels = [k for k in confirmed[0]["scores"] if k != "vicreg"]
    m = confirmed[0].get("metric", "kappa")
    lines = [f"\nconfirmed: top {len(confirmed)} configurations pretrained again with {seeds} seeds, ranked by "
             f"CV {m} (mean over seeds of the per-fold mean; a configuration with a diverged seed after those "
             f"without); hold-out = images no selection saw",
             f"{'rank':>4} {'trial':>5}  {'CV ' + m:>15}  {'pooled':>6}  {'hold-out ' + m:>15}  "
             + "  ".join(f"{lab + ' CV / hold-out':>26}" for lab in labels)]

    def pm(d: dict, key: str) -> str:
        return f"{d.get(key, float('nan')):.4f} +- {d.get(key + '_std', float('nan')):.3f}"

    for e in confirmed:
        v = e["scores"].get("vicreg", {})
        base = "  ".join(f"{e['scores'][lab].get(f'cv_{m}', float('nan')):12.4f} / "
                         f"{e['scores'][lab].get(f'holdout_{m}', float('nan')):.4f}"
                         for lab in labels if lab in e["scores"])
        pooled = v.get(f"pooled_{m}", float("nan"))
        diverged = e.get("diverged_seeds", 0)
        note = f"  {diverged}/{e['seeds']} seeds diverged" if diverged else ""
        lines.append(f"{e['rank']:>4} {e['trial']:>5}  {pm(v, f'cv_{m}'):>15}  {pooled:6.4f}"
                     f"  {pm(v, f'holdout_{m}'):>15}  {base}{note}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def timing_summary(path: Path, offset: int = 0) -> str | None:
    """'per trial (mean of N, W workers): ...' from the timings.jsonl lines after `offset` bytes."""
    if not path.is_file():
        return None
    with open(path) as f:
        f.seek(offset)
        rows = []
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a killed worker: timings are informative only
    if not rows:
        return None

    def ms(key: str) -> float:
        return 1000 * sum(r[key] for r in rows) / len(rows)

    workers = len({(r["host"], r["worker"]) for r in rows})
    storage = sorted(r["storage"] for r in rows)
    p95 = 1000 * storage[min(len(storage) - 1, int(0.95 * len(storage)))]
    line = (f"time per trial (mean of {len(rows)} trials, {workers} worker{'s' * (workers > 1)}): "
            f"{ms('total'):.0f} ms = training+evaluation {ms('work'):.0f} + MLflow {ms('mlflow'):.0f} + "
            f"Optuna storage+sampler {ms('storage'):.0f} (p95 {p95:.0f}) + waiting for the claim lock "
            f"{ms('lock_wait'):.0f}")
    split = evaluation_split(rows)
    return line if split is None else f"{line}\n{split}"


def evaluation_split(rows: list[dict]) -> str | None:
    """'of which: pretraining P + probe Q + final scoring S (...)': the trials that ran all three
    (completed ones: a pruned trial has no final scoring), mean seconds per trial."""
    done = [r for r in rows if r.get("score", 0) > 0 and r.get("pretrain", 0) > 0]
    if not done:
        return None

    def s(key: str) -> float:
        return sum(r.get(key, 0.0) for r in done) / len(done)

    share = (s("probe") + s("score")) / (s("pretrain") + s("probe") + s("score"))
    base = sum(r.get("baselines", 0.0) for r in rows)
    return (f"  of which, per completed trial (mean of {len(done)}): pretraining {s('pretrain'):.1f} s + pruning probe "
            f"{s('probe'):.1f} s + final scoring {s('score'):.1f} s: evaluation is {share:.0%} of it"
            + (f"; the baselines took {base:.1f} s once for the study" if base > 0.05 else ""))


def closing_lines(spec: StudySpec, dry_run: bool, tracking_uri: str | None, experiment_id: str | None) -> None:
    """What a sweep prints last: the best file (--best's table), and where to see the runs."""
    print()
    if dry_run:
        print("dry run: nothing was trained, so no best-configurations file is written")
    if (dry_run or print_best(spec) == 0) and experiment_id is not None:
        uri = tracking_uri or "sqlite:///mlflow.db"
        server = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
        if server == "http://127.0.0.1:5000":
            print(f"MLflow UI on this store: mlflow ui --backend-store-uri {mask_url(uri)} "
                  f"--host 127.0.0.1 --port 5000  (or: make ui)")
        print(f"the study's runs: {runs_page(server, experiment_id)}")
