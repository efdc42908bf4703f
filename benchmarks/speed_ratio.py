"""How steady an INT8 / FP32 speed ratio is on this machine: ONNX files timed interleaved, several times over.

Each repeat times all files against each other (:func:`qdr_plugin.bench.timing.interleaved_median_seconds`: warm-up,
then ``--rounds`` passes of ``--runs / --rounds`` runs each) on one fixed 1 x C x S x S input and reports every
file's speed as a ratio to the first file's; ``--pause`` seconds pass between repeats, so they sample the machine's
drift. Prints a table (one row per repeat and file, then the median / min / max ratio per file) and writes JSON.

    python benchmarks/speed_ratio.py benchmarks/out/dncnn_sigma25_fp32.onnx benchmarks/out/dncnn_sigma25_qdr_int8.onnx
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.bench.timing import interleaved_median_seconds

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
COLUMNS = [('repeat', 'repeat', ''), ('file', 'file', ''), ('ms', 'ms', '.4f'), ('ratio', 'ratio', '.4f')]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('onnx', nargs='+', help='ONNX files; the first one is the reference (FP32)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--runs', type=int, default=20, help='timed runs per file and repeat (default 20)')
    parser.add_argument('--rounds', type=int, default=5, help='interleaved passes per repeat (default 5)')
    parser.add_argument('--pause', type=float, default=20.0, help='seconds between repeats (default 20)')
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--threads', type=int, default=os.cpu_count())
    parser.add_argument('--name', default='speed_ratio', help='results/<name>.json (default speed_ratio)')
    args = parser.parse_args()
    calls = {}
    for path in args.onnx:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
        inp = session.get_inputs()[0]
        feed = {inp.name: np.random.default_rng(0).random((1, inp.shape[1], args.size, args.size), dtype=np.float32)}
        calls[Path(path).name] = lambda s=session, f=feed: s.run(None, f)
    reference = Path(args.onnx[0]).name
    rows, ratios = [], {name: [] for name in calls}
    for repeat in range(args.repeats):
        if repeat:
            time.sleep(args.pause)
        seconds = interleaved_median_seconds(calls, args.runs, rounds=args.rounds)
        for name, value in seconds.items():
            ratios[name].append(seconds[reference] / value)
            rows.append({'repeat': repeat + 1, 'file': name, 'ms': value * 1000, 'ratio': ratios[name][-1]})
    for name, values in ratios.items():
        rows.append({'repeat': 'median / min / max', 'file': name, 'ms': '',
                     'ratio': f'{statistics.median(values):.2f} / {min(values):.2f} / {max(values):.2f}'})
    table = markdown_table(rows, COLUMNS)
    print(table)
    info = run_info(command_line(), args.threads, size=args.size, runs=args.runs, rounds=args.rounds,
                    repeats=args.repeats, pause=args.pause)
    print(f'written: {write_results(RESULTS_DIR, args.name, rows, info, table)["json"]}')


if __name__ == '__main__':
    main()
