"""Measured latency in ONNX Runtime, interleaved, and the rank agreement of a latency proxy with it.

:func:`interleaved_latency` times several ONNX files on one input size in rounds: every round runs each file once,
in an order rotated from round to round, so a slow spell of a shared machine hits all of them alike; it reports the
median and the range (min, max) in milliseconds per file. :func:`spearman` is the rank correlation (ties get mean
ranks) between the proxy (transformer blocks kept) and the measured medians: 1 when the proxy orders the
candidates as the measurement does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def interleaved_latency(files: Mapping[str, str | Path], channels: int, size: int, rounds: int = 20, warmup: int = 3,
                        threads: int = 1) -> dict[str, dict[str, float]]:
    """``{name: {'median_ms', 'min_ms', 'max_ms'}}`` of each ONNX file on one ``1 x channels x size x size`` input
    (FP32, ONNX Runtime's CPU provider, ``threads`` intra-op threads, full graph optimisation), ``warmup`` untimed
    runs each, then ``rounds`` interleaved rounds."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {name: ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
                for name, path in files.items()}
    feed = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
    names = list(sessions)
    for _ in range(warmup):
        for name in names:
            sessions[name].run(None, {sessions[name].get_inputs()[0].name: feed})
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            session = sessions[name]
            start = time.perf_counter()
            session.run(None, {session.get_inputs()[0].name: feed})
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: {'median_ms': statistics.median(t), 'min_ms': min(t), 'max_ms': max(t)} for name, t in times.items()}


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties given their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of ``x`` and ``y`` (the Pearson correlation of their ranks); ``nan`` when either
    is constant or shorter than 2."""
    if len(x) != len(y):
        raise ValueError('spearman needs two sequences of one length.')
    rx, ry = np.asarray(_ranks(x)), np.asarray(_ranks(y))
    if len(x) < 2 or rx.std() == 0 or ry.std() == 0:
        return float('nan')
    return float(np.corrcoef(rx, ry)[0, 1])
