"""Benchmark and sensitivity results as a Markdown table, JSON (with per-image PSNRs, the command, date and machine)
and CSV (the scalar columns); ``basicsr bench`` and the scripts in ``benchmarks/`` write theirs with it."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from qdr_plugin.utils.atomic_write import atomic_write_text

GROUND_TRUTH = 'ground truth'
"""The ``psnr_against`` value of a row scored against its set's ground truth (else: ``<reference> output``)."""

Column = tuple[str, str, str]
"""``(row key, header, format)``; the format is a ``str.format`` spec, ``'count'`` (thousands separators) or
``'giga'`` (MACs in G, or in M below 0.1 G); a text value is shown as it is."""

BENCH_COLUMNS: list[Column] = [
    ('model', 'model', ''), ('runtime', 'runtime', ''), ('precision', 'precision', ''), ('dataset', 'dataset', ''),
    ('sigma', 'sigma', 'g'), ('scale', 'scale', 'd'), ('scored_on', 'scored on', ''),
    ('psnr_against', 'PSNR against', ''), ('psnr', 'PSNR (dB)', '.3f'), ('ssim', 'SSIM', '.4f'),
    ('retention', 'retention', '.4f'), ('drop_db', 'drop (dB)', '.3f'), ('params', 'params', 'count'),
    ('macs', 'MACs', 'giga'), ('fps', 'FPS', '.2f'),
]
"""Every column a bench table can have; :func:`bench_columns` picks those a run needs."""
SUMMARY_COLUMNS: list[Column] = [
    ('model', 'model', ''), ('sets', 'sets', 'd'), ('retention', 'retention', '.4f'),
    ('mean_drop_db', 'mean drop (dB)', '.3f'), ('max_drop_db', 'largest drop (dB)', '.3f'),
    ('max_drop_on', 'largest drop on', ''),
]
SENSITIVITY_COLUMNS: list[Column] = [
    ('layer', 'layer', ''), ('type', 'type', ''), ('quantizers', 'quantizers', ''), ('psnr', 'PSNR (dB)', '.3f'),
    ('loss_db', 'dB lost', '.3f'),
]


def bench_columns(rows: Sequence[dict[str, Any]]) -> list[Column]:
    """The table columns of a run's ``rows``: the noise level when a row has one, the scale when one is not 1, what
    the metrics are computed on, and what the PSNR is against when a row is not scored against ground truth."""
    wanted = {
        'sigma': any(r['sigma'] is not None for r in rows),
        'scale': any(r['scale'] != 1 for r in rows),
        'psnr_against': any(r['psnr_against'] != GROUND_TRUTH for r in rows),
    }
    return [column for column in BENCH_COLUMNS if wanted.get(column[0], True)]


def _format(value: Any, fmt: str) -> str:
    if value is None:
        return '-'
    if isinstance(value, str):
        return value
    if fmt == 'count':
        return f'{value:,}'
    if fmt == 'giga':
        return f'{value / 1e9:.2f} G' if value >= 1e8 else f'{value / 1e6:.2f} M'
    text = format(value, fmt)
    negative_zero = isinstance(value, float) and text.startswith('-') and float(text.rstrip('%')) == 0
    return text[1:] if negative_zero else text  # no -0.000


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A Markdown table of ``rows``; missing values show as ``-``."""
    lines = ['| ' + ' | '.join(header for _, header, _ in columns) + ' |', '|' + '---|' * len(columns)]
    lines += ['| ' + ' | '.join(_format(row.get(key), fmt) for key, _, fmt in columns) + ' |' for row in rows]
    return '\n'.join(lines)


def _cpu_name() -> str:
    """The CPU model (Linux ``/proc/cpuinfo``), else the machine type."""
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors='replace').splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    import onnxruntime

    return {
        'platform': platform.platform(), 'processor': _cpu_name(),
        'cpu_count': os.cpu_count(), 'threads': threads, 'python': platform.python_version(),
        'torch': torch.__version__, 'onnxruntime': onnxruntime.__version__,
    }


def command_line(argv: Sequence[str] | None = None) -> str:
    """The running script's command (``argv``, default ``sys.argv``) as one shell line: ``python <script> <args>``."""
    argv = sys.argv if argv is None else argv
    return shlex.join(['python', Path(argv[0]).as_posix(), *argv[1:]])


def run_info(command: str, threads: int, **settings: Any) -> dict[str, Any]:
    """The header of a results file: the command, the date and time, the machine and the run's settings."""
    return {'command': command, 'date': datetime.now().isoformat(timespec='seconds'), 'machine': machine(threads),
            **settings}


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    keys = [k for k in rows[0] if not any(isinstance(r.get(k), (list, dict)) for r in rows)] if rows else []
    text = io.StringIO(newline='')
    writer = csv.DictWriter(text, keys, extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def write_results(
    out: str | Path, stem: str, rows: Sequence[dict[str, Any]], info: dict[str, Any], table: str, extra: str = ''
) -> dict[str, Path]:
    """Write ``<out>/<stem>.json`` (``info`` + rows), ``<stem>.csv`` (scalar columns) and ``<stem>.md`` (``table``,
    then ``extra``, under the command), each atomically; returns the paths by suffix."""
    out = Path(out)
    paths = {suffix: out / f'{stem}.{suffix}' for suffix in ('json', 'csv', 'md')}
    atomic_write_text(paths['json'], json.dumps({**info, 'rows': list(rows)}, indent=2) + '\n')
    atomic_write_text(paths['csv'], _csv_text(rows), newline='')
    host = info['machine']
    header = (f'`{info["command"]}`\n\n{info["date"]}, {host["processor"]}, {host["threads"]} threads, '
              f'torch {host["torch"]}, onnxruntime {host["onnxruntime"]}\n\n')
    atomic_write_text(paths['md'], header + table + '\n' + (f'\n{extra}\n' if extra else ''))
    return paths
