"""Time to get the 224 px DRAC22-format training set ready: cold (decode 611 synthetic
1024x1024 PNGs) versus warm (from the uint8 cache), side by side.

    python benchmarks/cache.py [--count 611] [--size 224]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vicreg.config import load_config
from vicreg.data import load_datasets
from vicreg.data.synthetic import make_synthetic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=611)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        make_synthetic(Path(tmp) / "drac", count=args.count, size=1024, seed=0, test_count=0)
        print(f"wrote {args.count} synthetic 1024x1024 PNGs in {time.perf_counter() - t:.1f} s")
        cfg = load_config(None, ["data.dataset=synthetic", f"data.root={tmp}/drac",
                                 f"data.cache_dir={tmp}/cache", f"data.image_size={args.size}"])
        t = time.perf_counter()
        cold = load_datasets(cfg.data)
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = load_datasets(cfg.data)
        warm.train.images.sum()  # touch every byte, so the memory map is really read
        warm_s = time.perf_counter() - t
        assert warm.train.names == cold.train.names
    print(f"\n| {args.count} images -> {args.size} px | seconds |\n|---|---:|")
    print(f"| cold (decode + resize + write cache) | {cold_s:.2f} |")
    print(f"| warm (memory-mapped cache) | {warm_s:.3f} |")
    print(f"| warm speed-up | {cold_s / warm_s:.0f}x |")


if __name__ == "__main__":
    main()
