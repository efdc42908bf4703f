"""Where ONNX Runtime spends its time: kernel time per op type of each ONNX file, from ORT's own profiler.

Each file runs ``--warmup`` then ``--runs`` times on a random 1 x C x S x S input (``--size``, C read from the
model) with ``--threads`` intra-op threads; the profile's node events (``*_kernel_time``) are summed per op type
and printed as ms per run and share of the file's kernel time. Run it on an otherwise idle machine.

    python benchmarks/ort_profile.py benchmarks/out/dncnn_sigma25_fp32.onnx benchmarks/out/dncnn_sigma25_qdr_int8.onnx
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
COLUMNS = [('file', 'file', ''), ('op', 'op', ''), ('ms_per_run', 'ms_per_run', '.4f'), ('share', 'share', '.4f')]


def profile(path: str, size: int, threads: int, warmup: int, runs: int) -> dict[str, float]:
    """Kernel time per op type, in ms per run, over the ``runs`` runs of ``path`` that follow ``warmup`` runs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), 'ort_profile')
    session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('onnx', nargs='+', help='ONNX files')
    parser.add_argument('--size', type=int, default=256, help='input side (default 256)')
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='intra-op threads (default: cores)')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--runs', type=int, default=20)
    args = parser.parse_args()
    rows = []
    for path in args.onnx:
        per_op = profile(path, args.size, args.threads, args.warmup, args.runs)
        total = sum(per_op.values())
        rows += [{'file': Path(path).name, 'op': op, 'ms_per_run': ms, 'share': ms / total}
                 for op, ms in per_op.items()]
        rows.append({'file': Path(path).name, 'op': 'all kernels', 'ms_per_run': total, 'share': 1.0})
    table = markdown_table(rows, COLUMNS)
    print(table)
    info = run_info(command_line(), args.threads, size=args.size, warmup=args.warmup, runs=args.runs)
    print(f'written: {write_results(RESULTS_DIR, "ort_profile", rows, info, table)["json"]}')


if __name__ == '__main__':
    main()
