"""Speed the way DESIGN.md section 5 measures it: after warm-up, the median of timed runs on one fixed input."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from qdr_plugin.deploy.infer import Restorer


def median_seconds(run: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Call ``run`` ``warmup`` times untimed, then ``runs`` times timed; the median wall-clock seconds of one call."""
    if runs < 1:
        raise ValueError(f'the number of timed runs must be >= 1, got {runs}.')
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def frames_per_second(restore: Restorer, channels: int, size: int, runs: int, warmup: int = 3) -> float:
    """Frames per second of ``restore`` on one ``1 x channels x size x size`` float32 input (fixed random values)."""
    x = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
    return 1.0 / median_seconds(lambda: restore(x), runs, warmup)
