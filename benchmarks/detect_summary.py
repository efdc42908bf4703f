"""Downstream detection of every restorer in one table and one chart: mAP@0.5 of FastestDet on the degraded input,
the FP32 output, the QDR INT8 output and ONNX Runtime's PTQ output, against pseudo-labels from the clean images.

Reads what ``benchmarks/detect.sh`` writes (``benchmarks/results/detect_<restorer>/detect.json``, one
``basicsr bench --detect`` run per restorer). Per restorer: the FP32 gain over the degraded input, the share of it
that INT8 and PTQ keep, and whether INT8 keeps at least 95 % of it; a set with too few pseudo-boxes and a restorer
whose FP32 output does not help the detector are named as such. ``±``: the standard deviation over the image
bootstrap draws of the run (for INT8 - FP32: of the paired difference). Writes
``benchmarks/results/detect_summary.{json,csv,md,png}``.

    python benchmarks/detect_summary.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
RESTORERS = {
    'efm_denoise': 'QDR EFM, denoising', 'efm_derain': 'QDR EFM, deraining', 'prenet_rain100h': 'PReNet (Rain100H)',
    'prenet_rain100l': 'PReNet (Rain100L)', 'efm_dehaze': 'QDR EFM, dehazing', 'gcanet': 'GCANet',
    'aodnet': 'AOD-Net', 'efm_lowlight': 'QDR EFM, low light', 'iat_lol_v1': 'IAT (LOL-v1)',
}
KEPT_TARGET = 0.95
COLUMNS = [
    ('restorer', 'restorer', ''), ('set', 'set', ''), ('pseudo', 'pseudo-boxes (classes)', ''),
    ('degraded', 'degraded', ''), ('fp32', 'FP32', ''), ('int8', 'QDR INT8', ''), ('ptq', 'ORT PTQ', ''),
    ('fp32_gain', 'FP32 gain', ''), ('int8_kept', 'INT8 keeps', ''), ('int8_vs_fp32', 'INT8 - FP32', ''),
    ('ptq_kept', 'PTQ keeps', ''), ('verdict', f'INT8 keeps >= {KEPT_TARGET:.0%}', ''),
]


def _map(row: dict[str, Any]) -> str:
    return f'{row["map50"]:.1f} ± {row["map50_std"]:.1f}' if row['map50_std'] is not None else f'{row["map50"]:.1f}'


def _kept(row: dict[str, Any]) -> str:
    return '-' if row['gain_kept'] is None else f'{row["gain_kept"]:.1%}'


def _verdict(stable: bool, fp32: dict[str, Any], int8: dict[str, Any]) -> str:
    if not stable:
        return 'too few pseudo-boxes for a stable mAP'
    if fp32['gain50'] <= 0:
        return 'restoration does not help the detector'
    kept = 'yes' if int8['gain_kept'] >= KEPT_TARGET else 'no'
    if fp32['gain50_std'] is not None and fp32['gain50'] < 2 * fp32['gain50_std']:
        return f'{kept}, but the FP32 gain is within 2 std of zero (no measurable help)'
    return kept


def _row(restorer: str, payload: dict[str, Any]) -> dict[str, Any]:
    rows = {row['version']: row for row in payload['rows']}
    ptq = next(name for name in rows if name.startswith('ptq_'))
    summary = payload['sets'][0]
    fp32, int8 = rows['fp32'], rows['qdr_int8']
    record = {'restorer': RESTORERS[restorer], 'set': summary['set'],
              'pseudo': f'{summary["pseudo_boxes"]} ({summary["class_count"]})', 'stable': summary['stable'],
              'ptq_calibration': ptq[4:], 'verdict': _verdict(summary['stable'], fp32, int8), 'map50': {}}
    if not summary['stable']:
        return record
    diff = int8['map50'] - fp32['map50']
    diff_std = f' ± {int8["vs_reference_std"]:.1f}' if int8['vs_reference_std'] is not None else ''
    record.update(degraded=_map(rows['degraded']), fp32=_map(fp32), int8=_map(int8),
                  ptq=f'{_map(rows[ptq])} ({ptq[4:]})', fp32_gain=f'{fp32["gain50"]:+.1f} ± {fp32["gain50_std"]:.1f}',
                  int8_kept=_kept(int8), int8_vs_fp32=f'{diff:+.1f}{diff_std}', ptq_kept=_kept(rows[ptq]),
                  map50={name: rows[key]['map50'] for name, key in
                         (('degraded', 'degraded'), ('fp32', 'fp32'), ('int8', 'qdr_int8'), ('ptq', ptq))},
                  map5095={name: rows[key]['map'] for name, key in
                           (('degraded', 'degraded'), ('fp32', 'fp32'), ('int8', 'qdr_int8'), ('ptq', ptq))})
    return record


def _plot(records: list[dict[str, Any]], path: Path) -> Path:
    shown = [r for r in records if r['map50']]
    versions = [('degraded', 'degraded input', '#bbbbbb'), ('fp32', 'FP32 output', '#4c72b0'),
                ('int8', 'QDR INT8 output', '#dd8452'), ('ptq', 'ORT PTQ output', '#55a868')]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(shown)), 4.2))
    width = 0.2
    for k, (key, label, colour) in enumerate(versions):
        ax.bar([i + (k - 1.5) * width for i in range(len(shown))], [r['map50'][key] for r in shown], width,
               label=label, color=colour)
    ax.set_xticks(range(len(shown)), [f'{r["restorer"]}\n{r["set"]}' for r in shown], fontsize=7)
    ax.set_ylabel('mAP@0.5 (%) vs pseudo-labels (clean = 100)')
    ax.set_title('FastestDet on degraded and restored images')
    ax.legend(fontsize=7, ncol=4, loc='upper center', bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    records = []
    for restorer in RESTORERS:
        path = RESULTS_DIR / f'detect_{restorer}' / 'detect.json'
        if not path.is_file():
            print(f'{path.relative_to(RESULTS_DIR.parent.parent)} is missing: run bash benchmarks/detect.sh {restorer}')
            continue
        records.append(_row(restorer, json.loads(path.read_text())))
    info = run_info(command_line(), 1, sources=[f'detect_{r}/detect.json' for r in RESTORERS])
    table = markdown_table(records, COLUMNS)
    note = ('mAP@0.5 in % against pseudo-labels (FastestDet boxes scoring >= 0.5 on the clean image; clean = 100 by '
            'construction), ± over the image bootstrap. gain = mAP@0.5 of the output - of the degraded input; '
            'keeps = gain / FP32 gain; INT8 - FP32 ± the paired bootstrap spread of the difference.')
    paths = write_results(RESULTS_DIR, 'detect_summary', records, info, table, note)
    png = _plot(records, RESULTS_DIR / 'detect_summary.png')
    print(f'{table}\n\n{note}')
    print('wrote', ', '.join(str(p) for p in [*paths.values(), png]))


if __name__ == '__main__':
    main()
