"""ONNX Runtime's own profiler: kernel time per op type of an ONNX file (what ``basicsr export --profile``,
``basicsr bench --profile`` and ``benchmarks/ort_profile.py`` report)."""

from __future__ import annotations

import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def op_times(path: str | Path, size: int = 256, threads: int = 1, warmup: int = 2, runs: int = 5) -> dict[str, float]:
    """Kernel time per op type, in ms per run (largest first), over the ``runs`` runs of ``path`` on a random
    ``1 x C x size x size`` input that follow ``warmup`` runs, with ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), 'ort_profile')
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).random((1, inp.shape[1], size, size), dtype=np.float32)
    for _ in range(warmup + runs):
        session.run(None, {inp.name: x})
    profile_file = session.end_profiling()
    events = json.loads(Path(profile_file).read_text())
    os.remove(profile_file)
    starts = sorted(e['ts'] for e in events if e.get('cat') == 'Session' and e['name'] == 'model_run')
    cutoff = starts[warmup]  # the first timed run; the warm-up runs before it are not counted
    totals: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get('cat') == 'Node' and event['name'].endswith('_kernel_time') and event['ts'] >= cutoff:
            totals[event['args']['op_name']] += event['dur']
    return {op: us / runs / 1000.0 for op, us in totals.most_common()}
