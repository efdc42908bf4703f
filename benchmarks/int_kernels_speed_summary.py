"""The table of ``bash benchmarks/int_kernels_speed.sh``: per arch, the FP32 file's time and each INT8 file's speed as a
ratio to it (median and min-max over the repeats), beside the integer / float convolution counts of
``benchmarks/results/int_kernels_after.json``; marks each INT8 file that reaches ``--target`` x FP32 (2x; DnCNN
3.5x) and whether it is at least as fast as ONNX Runtime's PTQ in every repeat's median.

    python benchmarks/int_kernels_speed_summary.py
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / 'results'
TARGETS = {'DnCNN': 3.5}
"""Speed-up over FP32 asked of the INT8 file per arch stem; others 2x."""


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
        target = TARGETS.get(arch, 2.0)
        rows.append({
            'arch': arch, 'fp32_ms': fp32_ms, 'integer_convs': count.get('integer_convs'),
            'convs': count.get('convs'), **{f'{key}_ratio': values for key, values in ratio.items()},
            'target': target, 'meets_target': statistics.median(ratio['points']) >= target,
            'at_least_ptq': all(p >= q for p, q in zip(ratio['points'], ratio['ptq'], strict=True)),
        })
    return rows


def _cell(values: list[float]) -> str:
    return f'{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})'


def markdown(rows: list[dict]) -> str:
    lines = ['| arch | integer convs | FP32 ms | INT8, integer_points: false | INT8 (default) | ORT PTQ | target | '
             'met | >= PTQ in every repeat |', '|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        lines.append(f"| {row['arch']} | {row['integer_convs']} / {row['convs']} | {row['fp32_ms']:.1f} | "
                     f"{_cell(row['no_points_ratio'])} | {_cell(row['points_ratio'])} | {_cell(row['ptq_ratio'])} | "
                     f"{row['target']:.1f}x | {'yes' if row['meets_target'] else 'no'} | "
                     f"{'yes' if row['at_least_ptq'] else 'no'} |")
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
