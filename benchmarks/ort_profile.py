"""Where ONNX Runtime spends its time: kernel time per op type of each ONNX file, from ORT's own profiler.

Each file runs ``--warmup`` then ``--runs`` times on a random 1 x C x S x S input (``--size``, C read from the
model) with ``--threads`` intra-op threads; the profile's node events (``*_kernel_time``) are summed per op type
and printed as ms per run and share of the file's kernel time. Run it on an otherwise idle machine.

    python benchmarks/ort_profile.py benchmarks/out/dncnn_sigma25_fp32.onnx benchmarks/out/dncnn_sigma25_qdr_int8.onnx
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.deploy.ort_profile import op_times

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
COLUMNS = [('file', 'file', ''), ('op', 'op', ''), ('ms_per_run', 'ms_per_run', '.4f'), ('share', 'share', '.4f')]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('onnx', nargs='+', help='ONNX files')
    parser.add_argument('--size', type=int, default=256, help='input side (default 256)')
    parser.add_argument('--threads', type=int, default=os.cpu_count(), help='intra-op threads (default: cores)')
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--name', default='ort_profile', help='results/<name>.json (default ort_profile)')
    args = parser.parse_args()
    rows = []
    for path in args.onnx:
        per_op = op_times(path, args.size, args.threads, args.warmup, args.runs)
        total = sum(per_op.values())
        rows += [{'file': Path(path).name, 'op': op, 'ms_per_run': ms, 'share': ms / total}
                 for op, ms in per_op.items()]
        rows.append({'file': Path(path).name, 'op': 'all kernels', 'ms_per_run': total, 'share': 1.0})
    table = markdown_table(rows, COLUMNS)
    print(table)
    info = run_info(command_line(), args.threads, size=args.size, warmup=args.warmup, runs=args.runs)
    print(f'written: {write_results(RESULTS_DIR, args.name, rows, info, table)["json"]}')


if __name__ == '__main__':
    main()
