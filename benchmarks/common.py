"""Helpers shared by the benchmark scripts: options loading, result files, tables."""

from __future__ import annotations

# isort: off
import qdr_plugin  # noqa: F401  (first: registers the plugin and lets basicsr 1.4.2 import)
# isort: on

import json
import platform
import sys
from datetime import date
from pathlib import Path

import torch
import yaml
from basicsr.utils.options import ordered_yaml

RESULTS_DIR = Path(__file__).resolve().parent / 'results'


def load_options(path: str | Path) -> dict:
    """An options YAML as basicsr reads it, plus the keys ``parse_options`` would add for a CPU, non-dist run."""
    with open(path) as f:
        opt = yaml.load(f, Loader=ordered_yaml()[0])
    opt.update(dist=False, rank=0, world_size=1, is_train=True, auto_resume=False)
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]
    return opt


def machine() -> str:
    return f'{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}'


def write_results(name: str, rows: list[dict], command: str) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the rows, the command, the date and the machine."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f'{name}.json'
    payload = {'command': command, 'date': date.today().isoformat(), 'machine': machine(), 'rows': rows}
    path.write_text(json.dumps(payload, indent=2) + '\n')
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f'{v:.4f}' if isinstance(v, float) else str(v)

    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    lines += ['| ' + ' | '.join(fmt(r.get(c, '')) for c in columns) + ' |' for r in rows]
    return '\n'.join(lines)


def command_line() -> str:
    return 'python ' + ' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
