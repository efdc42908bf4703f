"""The low-bit comparison as one table per setting (the EFM on BSD68 at W8A8, W4A8 and W4A4, the EFM on the low-light
task at W4A4, QATIE's HybridMixUNet on BSD68 at W8A8): every method's PSNR on the whole validation set (fake-quant,
mean and standard deviation over its seeds), its drop from the FP32 start, and its difference from plain QAT, marked
where it exceeds two standard deviations of that difference.

Reads ``benchmarks/results/low_bit/low_bit_<setting>_<method>_s<seed>.json`` (``benchmarks/low_bit.sh``); writes
``benchmarks/results/low_bit_summary.{json,csv,md}``. With one seed the spread is unknown and no difference is marked.

    python benchmarks/low_bit_summary.py
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
SETTINGS = {
    'w8a8': 'EFM, BSD68 sigma 25, W8A8', 'w4a8': 'EFM, BSD68 sigma 25, W4A8', 'w4a4': 'EFM, BSD68 sigma 25, W4A4',
    'lowlight_w4a4': 'EFM, low light (CBSD68-lowlight), W4A4', 'hybridmix_w8a8': 'HybridMixUNet, BSD68 sigma 25, W8A8',
}
METHODS = {
    'ptq': 'PTQ (calibration only)', 'qat': 'plain QAT (LSQ)', 'qat_okd': 'QAT + output KD',
    'qat_deckd': 'QAT + decoder KD', 'qdr_dfd': 'QDR (DFD)', 'qdr_lmr': 'QDR (DFD + LMR)',
    'crqat': 'CR-QAT (curriculum + PKD + relational KD)', 'qatie': 'QATIE scheme (observer + its loss)',
    'best': 'best combination (see docs/method.md)',
}
BASELINE = 'qat'
COLUMNS = [
    ('method', 'method', ''), ('seeds', 'seeds', 'd'), ('psnr', 'PSNR (dB)', ''),
    ('drop_db', 'drop from FP32 (dB)', '.3f'), ('vs_qat', 'vs plain QAT (dB)', ''),
]
_RUN = re.compile(r'low_bit_(?P<setting>(?:[a-z]+_)?w\d+a\d+)_(?P<method>\w+)_s(?P<seed>\d+)$')


def _runs() -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for path in sorted((RESULTS_DIR / 'low_bit').glob('low_bit_*.json')):
        match = _RUN.match(path.stem)
        if match:
            row = json.loads(path.read_text())['rows'][0]
            runs.setdefault((match['setting'], match['method']), {})[int(match['seed'])] = row
    return runs


def _spread(values: list[float]) -> float | None:
    return stdev(values) if len(values) > 1 else None


def _with_spread(value: float, spread: float | None) -> str:
    return f'{value:.3f}' if spread is None else f'{value:.3f} ± {spread:.3f}'


def _difference(scores: list[float], base: list[float] | None) -> str:
    """``mean - mean_base``, with ``*`` when it exceeds twice the standard deviation of the difference
    ``sqrt(s^2 / n + s_base^2 / n_base)``."""
    if not base:
        return '-'
    diff = mean(scores) - mean(base)
    spreads = _spread(scores), _spread(base)
    if None in spreads:
        return f'{diff:+.3f}'
    sigma = math.sqrt(spreads[0] ** 2 / len(scores) + spreads[1] ** 2 / len(base))
    return f'{diff:+.3f}' + (' *' if abs(diff) > 2 * sigma else '')


def _table(setting: str, runs: dict[tuple[str, str], dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    present = {method: runs[setting, method] for method in METHODS if (setting, method) in runs}
    if not present:
        return []
    fp32 = [row['psnr_fp32'] for seeds in present.values() for row in seeds.values()]
    baseline = [row['psnr_int8'] for row in present.get(BASELINE, {}).values()] or None
    rows = [{'setting': setting, 'method': 'FP32 (the start of every run)', 'seeds': 1, 'psnr': f'{fp32[0]:.3f}',
             'drop_db': 0.0, 'vs_qat': '-'}]
    for method, seeds in present.items():
        scores = [row['psnr_int8'] for _, row in sorted(seeds.items())]
        rows.append({'setting': setting, 'method': METHODS[method], 'key': method, 'seeds': len(scores),
                     'psnr': _with_spread(mean(scores), _spread(scores)), 'psnr_mean': mean(scores),
                     'psnr_std': _spread(scores), 'drop_db': fp32[0] - mean(scores),
                     'vs_qat': '-' if method == BASELINE else _difference(scores, baseline),
                     'per_seed': {seed: row['psnr_int8'] for seed, row in sorted(seeds.items())}})
    return rows


def main() -> None:
    runs = _runs()
    tables = {setting: _table(setting, runs) for setting in SETTINGS}
    rows = [row for table in tables.values() for row in table]
    text = '\n\n'.join(f'### {SETTINGS[setting]}\n\n{markdown_table(table, COLUMNS)}'
                       for setting, table in tables.items() if table)
    note = ('PSNR of the fake-quantized network on the whole validation set (BSD68 sigma 25, gray; CBSD68-lowlight, '
            'RGB), mean ± standard deviation over the seeds; * marks a difference from plain QAT larger than two '
            'standard deviations of that difference.')
    info = run_info(command_line(), 1, runs=len([r for r in rows if 'key' in r]))
    paths = write_results(RESULTS_DIR, 'low_bit_summary', rows, info, text or '(no runs yet)', note)
    print(f'{text}\n\n{note}' if text else 'no runs yet: bash benchmarks/low_bit.sh')
    print('wrote', ', '.join(str(p) for p in paths.values()))


if __name__ == '__main__':
    main()
