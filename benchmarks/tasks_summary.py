"""The four restoration tasks in one table, with the retention figure over tasks (docs/evaluation.md).

Reads the ``bench.json`` that ``benchmarks/tasks.sh`` writes per task (FP32, ONNX Runtime PTQ minmax / percentile,
plain QAT and QDR INT8, all ONNX files run by ONNX Runtime) and, where given, the ``benchmarks/speed_ratio.py``
JSON of the task's files (first file FP32, the others INT8); scores the degraded inputs themselves with each test
set's protocol. Prints one row per task and test set, then per INT8 model the retention over the tasks' test sets
with ground truth, ``mean_i PSNR_INT8,i / PSNR_FP32,i``, and the dB drops; writes
``benchmarks/results/tasks_summary.{json,csv,md}``.

    python benchmarks/tasks_summary.py --speed derain=benchmarks/results/speed_ratio_derain.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from qdr_plugin.bench.bench_cli import DEFAULT_DATA_ROOT
from qdr_plugin.bench.protocol import BenchSet, denoise_set, paired_set
from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.bench.runner import retention_summary
from qdr_plugin.utils.evaluation import evaluate

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
TASKS = ('denoise', 'derain', 'dehaze', 'lowlight')
MODELS = ('fp32', 'ptq_minmax', 'ptq_percentile', 'qat', 'qdr')
LONG = 'fp32_1500'
"""The FP32 network trained as long as the INT8 students (all iterations FP32), when ``--long-bench`` gives it."""
SUMMARY_COLUMNS = [('model', 'model', ''), ('sets', 'sets', ''), ('retention', 'retention', '.2%'),
                   ('mean_drop_db', 'mean drop (dB)', '.3f'), ('max_drop_db', 'largest drop (dB)', '.3f'),
                   ('max_drop_on', 'on', '')]


def _speed(path: Path | None) -> dict[str, str]:
    """``file stem -> 'median (min - max)'`` INT8 / FP32 speed ratios of a speed_ratio.py JSON."""
    if path is None:
        return {}
    rows = json.loads(path.read_text())['rows']
    out = {}
    for row in rows:
        if row['repeat'] == 'median / min / max' and row['ratio'] != '1.00 / 1.00 / 1.00':
            median, low, high = row['ratio'].split(' / ')
            out[Path(row['file']).stem] = f'{median}x ({low} - {high})'
    return out


def _input_scores(data_root: Path) -> dict[str, dict[str, float]]:
    """PSNR / SSIM of the degraded inputs themselves against the ground truth, per test set, with its protocol."""
    sets: list[BenchSet] = [denoise_set(data_root, 'CBSD68', 25.0)]
    sets += [paired_set(data_root, name) for name in ('Rain100H', 'SOTS-indoor', 'CBSD68-lowlight')]
    scores = {}
    for bench_set in sets:
        result = evaluate(lambda x: x, bench_set.dataset, bench_set.crop_border, bench_set.test_y_channel,
                          desc=f'input {bench_set.name}')
        scores[bench_set.name] = {'psnr': result['psnr'], 'ssim': result['ssim']}
    return scores


def _table_rows(task: str, rows: list[dict[str, Any]], speed: dict[str, str],
                inputs: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    by_set: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_set.setdefault(row['dataset'], {})[row['model']] = row
    table = []
    for name, models in by_set.items():
        if models.get('fp32', {}).get('psnr') is None:  # no ground truth: fidelity to FP32 only
            entry = {'task': task, 'set': f'{name} (PSNR vs FP32 output)', 'fp32': '-'}
            for model in MODELS[1:]:
                entry[model] = f'{models[model]["psnr"]:.2f}' if model in models else '-'
            entry['qdr_drop'] = '-'
        else:
            entry = {'task': task, 'set': f'{name} ({models["fp32"]["scored_on"]})'}
            if name in inputs:
                entry['input'] = f'{inputs[name]["psnr"]:.3f} / {inputs[name]["ssim"]:.4f}'
                entry['margin'] = f'{models["fp32"]["psnr"] - inputs[name]["psnr"]:.2f}'
            for model in (*MODELS, LONG):
                row = models.get(model)
                entry[model] = '-' if row is None else f'{row["psnr"]:.3f} / {row["ssim"]:.4f}'
            for key, reference in (('qdr_drop', 'fp32'), ('qdr_drop_long', LONG)):
                entry[key] = (f'{models[reference]["psnr"] - models["qdr"]["psnr"]:.3f}'
                              if 'qdr' in models and reference in models else '-')
        entry['qdr_speed'] = speed.get(f'{task}_qdr_int8', '-')
        entry['ptq_speed'] = speed.get(f'{task}_ptq_percentile', '-')
        table.append(entry)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--bench', type=Path, default=Path('benchmarks/out/tasks'),
                        help='folder with <task>/bench.json (default benchmarks/out/tasks)')
    parser.add_argument('--speed', action='append', default=[], metavar='TASK=JSON',
                        help='speed_ratio.py JSON of a task\'s files (repeat)')
    parser.add_argument('--data-root', type=Path, default=DEFAULT_DATA_ROOT,
                        help='the folder holding the test sets, for the inputs\' own scores')
    parser.add_argument('--long-bench', type=Path,
                        help=f'folder with <task>_{LONG}/bench.json holding a model named {LONG}: the FP32 network '
                        'trained as long as the students, added as a column and as a second retention reference')
    parser.add_argument('--name', default='tasks_summary', help='results/<name>.* (default tasks_summary)')
    args = parser.parse_args()
    speeds = {}
    for text in args.speed:
        task, _, path = text.partition('=')
        speeds[task] = Path(path)
    inputs = _input_scores(args.data_root)
    all_rows, table = [], []
    for task in TASKS:
        bench = args.bench / task / 'bench.json'
        if not bench.is_file():
            print(f'{bench} is missing: run bash benchmarks/tasks.sh {task}; the task is left out')
            continue
        rows = json.loads(bench.read_text())['rows']
        if args.long_bench is not None:
            rows += [row for row in json.loads((args.long_bench / f'{task}_{LONG}' / 'bench.json').read_text())['rows']
                     if row['model'] == LONG]
        all_rows += rows
        table += _table_rows(task, rows, _speed(speeds.get(task)), inputs)
    columns = [('task', 'task', ''), ('set', 'test set', ''), ('input', 'input', ''), ('fp32', 'FP32', ''),
               ('margin', 'FP32 - input (dB)', ''),
               ('ptq_minmax', 'ORT PTQ minmax', ''), ('ptq_percentile', 'ORT PTQ percentile', ''),
               ('qat', 'plain QAT INT8', ''), ('qdr', 'QDR INT8', ''), ('qdr_drop', 'FP32 - QDR (dB)', ''),
               ('qdr_speed', 'QDR INT8 / FP32 speed', ''), ('ptq_speed', 'PTQ / FP32 speed', '')]
    if args.long_bench is not None:
        columns[5:5] = [(LONG, 'FP32, trained as long', '')]
        columns.insert(-2, ('qdr_drop_long', 'FP32 as long - QDR (dB)', ''))
    summary = retention_summary(all_rows, 'fp32')
    long_summary = retention_summary(all_rows, LONG) if args.long_bench is not None else []
    text = markdown_table(table, columns)
    summary_text = markdown_table(summary, SUMMARY_COLUMNS)
    extra = 'Retention over the tasks (PSNR / PSNR_FP32, test sets with ground truth):\n\n' + summary_text
    if long_summary:
        extra += (f'\n\nRetention against {LONG}, the FP32 network trained as long:\n\n'
                  + markdown_table(long_summary, SUMMARY_COLUMNS))
    info = run_info(command_line(), os.cpu_count() or 1, speed={task: str(path) for task, path in speeds.items()},
                    inputs=inputs, summary=summary, summary_against_fp32_1500=long_summary)
    paths = write_results(RESULTS_DIR, args.name, table, info, text, extra)
    print(f'{text}\n\n{extra}')
    print('wrote', ', '.join(str(p) for p in paths.values()))


if __name__ == '__main__':
    main()
