"""The published restorers in INT8, one table: published FP32, our FP32, ONNX Runtime's PTQ, QDR INT8 and speed.

Reads what ``benchmarks/peers.sh`` writes: per model ``benchmarks/results/peers_<model>/bench.json`` (the FP32 file,
ONNX Runtime PTQ with minmax / percentile / entropy calibration and the QDR INT8 file, all run by ONNX Runtime on the
full test set), ``benchmarks/results/peers_fp32_<model>.json`` (the published numbers, from
``benchmarks/peers_fp32.py``), ``benchmarks/results/peers_parity_<model>.json`` (``benchmarks/onnx_eval.py``) and,
where present, ``benchmarks/results/speed_ratio_peer_<model>.json`` (``benchmarks/speed_ratio.py``: FP32 file first,
then the QDR INT8 file, then the best PTQ file). "PTQ best" is the calibration with the highest PSNR on the test set
itself (an upper bound on what PTQ reaches; QDR is not tuned on the test set). Writes
``benchmarks/results/peers_summary.{json,csv,md}``.

    python benchmarks/peers_summary.py
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
MODELS = ('prenet_rain100h', 'prenet_rain100l', 'gcanet', 'aodnet', 'iat_lol_v1')
PTQ = ('ptq_minmax', 'ptq_percentile', 'ptq_entropy')
COLUMNS = [
    ('model', 'model', ''), ('set', 'test set', ''), ('published', 'published FP32', ''), ('fp32', 'our FP32', ''),
    ('ptq', 'ORT PTQ (best calibration)', ''), ('qdr', 'QDR INT8', ''), ('qdr_drop', 'INT8 - FP32 (dB)', ''),
    ('qdr_over_ptq', 'QDR - PTQ (dB)', ''), ('speed', 'INT8 / FP32 speed', ''), ('parity', 'parity (dB)', ''),
]


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _speed(data: dict[str, Any] | None, stem: str) -> str:
    """``'median (min - max)'`` speed ratio of ``stem`` over the FP32 file in a speed_ratio.py JSON."""
    if data is None:
        return '-'
    ratios = sorted(row['ratio'] for row in data['rows']
                    if isinstance(row['repeat'], int) and Path(row['file']).stem == stem)
    if not ratios:
        return '-'
    return f'{ratios[len(ratios) // 2]:.2f}x ({ratios[0]:.2f} - {ratios[-1]:.2f})'


def _psnr(row: dict[str, Any]) -> str:
    return f'{row["psnr"]:.3f} / {row["ssim"]:.4f}' if row.get('ssim') is not None else f'{row["psnr"]:.3f}'


def _rows(model: str) -> list[dict[str, Any]]:
    bench = _load(RESULTS_DIR / f'peers_{model}' / 'bench.json')
    if bench is None:
        print(f'benchmarks/results/peers_{model}/bench.json is missing: run bash benchmarks/peers.sh {model}')
        return []
    fp32_record = _load(RESULTS_DIR / f'peers_fp32_{model}.json') or {}
    published = fp32_record.get('published')
    parity = _load(RESULTS_DIR / f'peers_parity_{model}.json')
    speed = _load(RESULTS_DIR / f'speed_ratio_peer_{model}.json')
    by_set: dict[str, dict[str, dict[str, Any]]] = {}
    for row in bench['rows']:
        by_set.setdefault(row['dataset'], {})[row['model']] = row
    table = []
    for name, rows in by_set.items():
        fidelity = rows['fp32'].get('psnr') is None  # no ground truth: PSNR against the FP32 file's output
        ptq_name = max((m for m in PTQ if m in rows), key=lambda m: rows[m]['psnr'])
        entry: dict[str, Any] = {
            'model': model,
            'set': f'{name} (PSNR vs FP32 output)' if fidelity else f'{name} ({rows["fp32"]["scored_on"]})',
            'fp32': '-' if fidelity else _psnr(rows['fp32']),
            'ptq': f'{_psnr(rows[ptq_name])} ({ptq_name[4:]})', 'qdr': _psnr(rows['qdr']),
            'qdr_over_ptq': f'{rows["qdr"]["psnr"] - rows[ptq_name]["psnr"]:+.3f}',
            'speed': _speed(speed, f'{model}_qdr_int8'),
            'psnr_fp32': rows['fp32'].get('psnr'), 'psnr_qdr': rows['qdr']['psnr'], 'ptq_best': ptq_name,
            'psnr_ptq_best': rows[ptq_name]['psnr'],
        }
        if not fidelity:
            entry['qdr_drop'] = f'{rows["qdr"]["psnr"] - rows["fp32"]["psnr"]:+.3f}'
            if published and published['on'] in name:
                ssim = f' / {published["ssim"]:.3f}' if published.get('ssim') else ''
                entry['published'] = f'{published["psnr"]:.2f}{ssim}'
            elif published:
                entry['published'] = f'{published["psnr"]:.2f} (on {published["on"]})'
        if parity is not None and not fidelity:
            ort = next((r for r in parity['rows'] if 'onnxruntime' in r['file']), None)
            if ort is not None:
                entry['parity'] = f'{ort["parity_psnr_db"]:.1f} ({ort["parity_max_steps"]:.1f} steps)'
        table.append(entry)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=MODELS)
    parser.add_argument('--name', default='peers_summary', help='results/<name>.* (default peers_summary)')
    args = parser.parse_args()
    table = [row for model in args.models for row in _rows(model)]
    text = markdown_table(table, COLUMNS)
    info = run_info(command_line(), os.cpu_count() or 1)
    paths = write_results(RESULTS_DIR, args.name, table, info, text)
    print(text)
    print('wrote', ', '.join(str(p) for p in paths.values()))


if __name__ == '__main__':
    main()
