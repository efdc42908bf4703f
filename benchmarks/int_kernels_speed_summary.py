"""The table of ``bash benchmarks/int_kernels_speed.sh``: per arch, the FP32 file's time and each INT8 file's speed as a
ratio to it (median and min-max over the repeats), beside the integer / float convolution counts of
``benchmarks/results/int_kernels_after.json``, and the INT8 file's speed as a ratio to ONNX Runtime's PTQ of the same
network (per repeat, then median and min-max); marks each INT8 file that reaches the speed-up over FP32 asked of its
arch (:data:`TARGETS`).

    python benchmarks/int_kernels_speed_summary.py
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / 'results'
TARGETS = {'DnCNN': 3.5, 'EDSR_small_x4': 2.0, 'SRVGGNetCompact_x4': 2.0, 'RCAN_small_x4': 2.0, 'EFM_w32_gray': 2.0,
           'EFM_w32_colour': 2.0}
"""Speed-up over FP32 asked of the INT8 file per arch stem (the others: only as fast as ONNX Runtime's PTQ)."""


def _ratios(rows: list[dict], suffix: str) -> list[float]:
    return [row['ratio'] for row in rows if isinstance(row['repeat'], int) and row['file'].endswith(suffix)]


def summarize(speed_dir: Path, counts_file: Path) -> list[dict]:
    """One row per arch from the speed JSONs and the convolution counts."""
    counts = {row['arch'].replace(' ', '_').replace('-', '_'): row
              for row in json.loads(counts_file.read_text())['rows']}
    rows = []
    for path in sorted(speed_dir.glob('*.json')):
        arch, data = path.stem, json.loads(path.read_text())['rows']
        fp32_ms = statistics.median(row['ms'] for row in data
                                    if isinstance(row['repeat'], int) and row['file'].endswith('_fp32.onnx'))
        ratio = {key: _ratios(data, suffix) for key, suffix in
                 (('no_points', '_int8_no_points.onnx'), ('points', '_int8.onnx'), ('ptq', '_ptq.onnx'))}
        count = counts.get(arch, {})
        target = TARGETS.get(arch)
        rows.append({
            'arch': arch, 'fp32_ms': fp32_ms, 'integer_convs': count.get('integer_convs'),
            'convs': count.get('convs'), **{f'{key}_ratio': values for key, values in ratio.items()},
            'vs_ptq': [p / q for p, q in zip(ratio['points'], ratio['ptq'], strict=True)],
            'target': target, 'meets_target': None if target is None else statistics.median(ratio['points']) >= target,
        })
    return rows


def _cell(values: list[float]) -> str:
    return f'{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})'


def markdown(rows: list[dict]) -> str:
    lines = ['| arch | integer convs | FP32 ms | INT8, integer_points: false | INT8 (default) | ORT PTQ | '
             'INT8 (default) / ORT PTQ | target vs FP32 | met |', '|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        target = '-' if row['target'] is None else f"{row['target']:.1f}x"
        met = {None: '-', True: 'yes', False: 'no'}[row['meets_target']]
        lines.append(f"| {row['arch']} | {row['integer_convs']} / {row['convs']} | {row['fp32_ms']:.1f} | "
                     f"{_cell(row['no_points_ratio'])} | {_cell(row['points_ratio'])} | {_cell(row['ptq_ratio'])} | "
                     f"{_cell(row['vs_ptq'])} | {target} | {met} |")
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--speed-dir', type=Path, default=RESULTS / 'int_kernels_speed')
    parser.add_argument('--counts', type=Path, default=RESULTS / 'int_kernels_after.json')
    args = parser.parse_args()
    rows = summarize(args.speed_dir, args.counts)
    table = markdown(rows)
    (RESULTS / 'int_kernels_speed_summary.json').write_text(json.dumps(rows, indent=1) + '\n')
    (RESULTS / 'int_kernels_speed_summary.md').write_text(table)
    print(table)


if __name__ == '__main__':
    main()
