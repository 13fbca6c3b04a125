"""`python benchmarks/learning.py --ablate`: one factor at a time, in two blocks, each row with
the same seeds as its block's base."""

from __future__ import annotations

from learning_runs import Bench, pm, reports, run_all, versus

# One factor at a time, in two blocks, each row with the same seeds as its block's base:
# - from BEFORE, the recipe as it was before the defaults changed, each row moving one thing
#   towards lightly: what found the cause (zero-init residuals);
# - from the default (zero-init off), every other factor the issue names: whether anything
#   still matters once the cause is fixed, towards the peer or away from both ("back again":
#   per-epoch lr, drop_last off).
# Symmetric = lightly's form: both views at the mean of our two views' probabilities. bf16:
# the peer runs float32; the row says what bf16 autocast costs in learning on the CPU (where it
# is the faster precision on CPUs with native bf16: --timing).
BEFORE = {"model.zero_init_residual": True}


ABLATION: list[tuple[str, dict, dict]] = [  # (row, its change, its base), in the order they run
    ("ours, before (zero-init residuals)", {}, BEFORE),
    ("zero-init residuals off", {"model.zero_init_residual": False}, BEFORE),
    ("symmetric blur and solarisation", {"augment.blur_p_a": 0.55, "augment.blur_p_b": 0.55,
                                         "augment.solarize_p_a": 0.1, "augment.solarize_p_b": 0.1}, BEFORE),
    ("torchvision per-image views", {"augment.views": "torchvision"}, BEFORE),
    ("bf16 autocast", {"train.precision": "bf16"}, BEFORE),
    ("ours, default (zero-init off)", {}, {}),
    ("per-batch normalisation", {"augment.normalise": "batch"}, {}),
    ("expander: last Linear with bias", {"model.expander_last_bias": True}, {}),
    ("bicubic crops", {"augment.resample": "bicubic"}, {}),
    ("antialiased (area) crops", {"augment.antialias": True}, {}),
    ("crops from a 2x cache, antialiased", {"data.crop_source_size": 32, "augment.antialias": True}, {}),
    ("lr per epoch, not per step", {"optim.schedule_every": "epoch"}, {}),
    ("drop_last off", {"train.drop_last": False}, {}),
]


BASES = {name: base for name, change, base in ABLATION if not change}  # the row each block is measured from


def ablate(b: Bench, seeds: int, parallel: int, run: bool = True, rows: list[str] | None = None) -> None:
    """The ablation table; `rows`: only the rows whose name contains one of these (and the
    bases they are compared with), e.g. to check one finding on another set."""
    wanted = [(name, over, base) for name, over, base in ABLATION
              if not rows or any(r.lower() in name.lower() for r in rows) or name in BASES]
    jobs = [("peer", "peer", {}, s) for s in range(seeds)]
    jobs += [("untrained", "untrained", {}, s) for s in range(seeds)] + [("raw", "raw", {}, 0)]
    jobs += [(f"ablate {name}", "ours", {**base, **over}, s) for name, over, base in wanted for s in range(seeds)]
    done = run_all(b, jobs, parallel, run)
    peer = reports(done, "peer", seeds)
    print(f"\nablation, {b.name} {b.config().data.image_size} px, {b.epochs} epochs, {seeds} seeds per row; "
          f"linear probe, hold-out of {len(peer[0].holdout_labels)} images")
    print("| row | hold-out accuracy | CV accuracy | minus peer (95% CI) | minus its base (95% CI) |")
    print("|---|---|---|---|---|")

    def ran(name: str) -> bool:
        return all((f"ablate {name}", s) in done for s in range(seeds))

    for name, _, base in wanted:
        if not ran(name):
            print(f"| {name} | not run | | | |")
            continue
        rs = reports(done, f"ablate {name}", seeds)
        base_name = next(n for n, v in BASES.items() if v == base)
        vs_base = "base" if name == base_name else (
            versus(rs, reports(done, f"ablate {base_name}", seeds), "base") if ran(base_name) else "")
        print(f"| {name} | {pm([r.holdout['accuracy'] for r in rs])} | {pm([r.summary['accuracy_mean'] for r in rs])} "
              f"| {versus(rs, peer, 'peer')} | {vs_base} |")
    floors = [(n, k, r) for n, k, r in (("untrained encoder", "untrained", seeds), ("raw pixels", "raw", 1))
              if all((k, s) in done for s in range(r))]
    for name, rs in [("peer (lightly)", peer)] + [(n, reports(done, k, r)) for n, k, r in floors]:
        print(f"| {name} | {pm([r.holdout['accuracy'] for r in rs])} | {pm([r.summary['accuracy_mean'] for r in rs])}"
              f" | | |")
