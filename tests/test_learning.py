"""The trainer learns on real images: a regression check that runs in about a minute.

A few epochs of pretraining on the textures (tiles of photographs bundled with scikit-image)
at 8 px must beat the untrained encoder's linear probe by MARGIN, which is derived from the
gain's spread over seeds, not picked by hand (benchmarks/learning.py --quick). The full
comparison with the peer and the floors is the learning benchmark's (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util

import pytest

# `python benchmarks/learning.py --quick 5` (2-core CPU, 2026-12-06, fused Adam): the pretrained
# probe's CV accuracy minus the untrained encoder's, over seeds 0-4: +0.072, +0.077, +0.073, +0.070,
# +0.055, mean +0.0691, sd 0.0085. The margin is the mean gain less three of its standard deviations
# (+0.044): a code change that costs more than about a third of the gain fails the test, while a
# seed of unchanged code falls below it about once in 700 (normal tail).
MEAN_GAIN, SD_GAIN = 0.0691, 0.0085
MARGIN = MEAN_GAIN - 3 * SD_GAIN


@pytest.mark.slow  # 20 s of pretraining and probing: make test, not the inner loop
@pytest.mark.skipif(importlib.util.find_spec("skimage") is None,
                    reason="the textures live in scikit-image's wheel (the dev extra installs it)")
def test_a_few_epochs_on_real_images_beat_the_untrained_encoder() -> None:
    from devtools.learning import quick_learning

    assert MARGIN > 0, "the margin must say pretraining helps: rerun benchmarks/learning.py --quick"
    mine, floor = quick_learning(seed=0)
    assert mine - floor > MARGIN, (f"pretrained probe {mine:.3f} vs untrained {floor:.3f}: gain {mine - floor:+.3f} "
                                   f"is below the margin {MARGIN:+.3f} (mean {MEAN_GAIN:+.3f} - 3 x sd {SD_GAIN:.3f})")
