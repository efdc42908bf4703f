"""Speed the way docs/evaluation.md measures it: after warm-up, the median of timed runs on one fixed input.

Models compared in one table are timed *interleaved* (:func:`interleaved_median_seconds`): the speed of a shared
machine drifts by 20-40 % within minutes, and timing one model after the other turns that drift into a false ratio.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping

import numpy as np

from qdr_plugin.deploy.infer import Restorer


def median_seconds(run: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Call ``run`` ``warmup`` times untimed, then ``runs`` times timed; the median wall-clock seconds of one call."""
    return interleaved_median_seconds({'run': run}, runs, warmup, rounds=1)['run']


def interleaved_median_seconds(
    calls: Mapping[str, Callable[[], object]], runs: int, warmup: int = 3, rounds: int = 5
) -> dict[str, float]:
    """The median wall-clock seconds of one call of each of ``calls``, timed against each other.

    Each call is made ``warmup`` times untimed; then ``rounds`` passes go over all of them in turn, each pass making
    one untimed call of each (it lets the previous one's idle threads settle) and ``ceil(runs / rounds)`` timed
    ones. A slow spell of the machine then lands on every call alike, so their ratios hold.
    """
    if runs < 1:
        raise ValueError(f'the number of timed runs must be >= 1, got {runs}.')
    if rounds < 1:
        raise ValueError(f'the number of rounds must be >= 1, got {rounds}.')
    for run in calls.values():
        for _ in range(warmup):
            run()
    per_round = math.ceil(runs / rounds)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, run in calls.items():
            if rounds > 1:
                run()
            for _ in range(per_round):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def frames_per_second(
    restorers: Mapping[str, tuple[Restorer, int]], size: int, runs: int, warmup: int = 3, rounds: int = 5
) -> dict[str, float]:
    """Frames per second of each ``name -> (restore, channels)`` on one ``1 x channels x size x size`` float32
    input (fixed random values), timed interleaved (:func:`interleaved_median_seconds`)."""
    inputs = {c: np.random.default_rng(0).random((1, c, size, size), dtype=np.float32) for _, c in restorers.values()}
    calls = {name: (lambda r=restore, x=inputs[c]: r(x)) for name, (restore, c) in restorers.items()}
    return {name: 1.0 / s for name, s in interleaved_median_seconds(calls, runs, warmup, rounds).items()}
