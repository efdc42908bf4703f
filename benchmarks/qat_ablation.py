"""The ablation table: INT8 (fake-quant) vs its own FP32 teacher on one validation set, for each QDR experiment.

Each experiment is a finished ``basicsr train`` run; its checkpoint ``experiments/<name>/models/net_g_latest.pth``
holds the quantized student and the FP32 teacher, and its options file (copied by basicsr into the experiment
folder) gives the network, the quantization and the validation set.

    python benchmarks/qat_ablation.py --name bsd68_ablation ablation_bsd68_ptq ablation_bsd68_qat ...
"""

from __future__ import annotations

# isort: off
import qdr_plugin  # noqa: F401  (first: registers the plugin and lets basicsr 1.4.2 import)
# isort: on

import argparse
from pathlib import Path

import torch
from basicsr.data import build_dataset

from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.deploy.options import read_options
from qdr_plugin.utils.checkpoint import RECORD_KEY, load_networks, read_checkpoint
from qdr_plugin.utils.evaluation import evaluate

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
COLUMNS = [('experiment', 'experiment', ''), ('dataset', 'dataset', ''), ('sigma', 'sigma', 'g'),
           ('iters', 'iters', ''), ('psnr_fp32', 'psnr_fp32', '.4f'), ('psnr_int8', 'psnr_int8', '.4f'),
           ('drop_db', 'drop_db', '.4f'), ('retention', 'retention', '.4f'), ('ssim_fp32', 'ssim_fp32', '.4f'),
           ('ssim_int8', 'ssim_int8', '.4f')]


def _options_file(experiment: Path) -> Path:
    files = sorted(experiment.glob('*.yml'))
    if not files:
        raise FileNotFoundError(f'{experiment} has no options file: is it a basicsr experiment folder?')
    return files[0]


def _trained_options(checkpoint: Path, opt: dict) -> tuple[dict, dict | None]:
    """The ``network_g`` and ``quant`` a checkpoint records (a run started with ``--force_yml`` overrides has them
    only there: basicsr copies the options file as written), else the options file's."""
    record = read_checkpoint(str(checkpoint)).get(RECORD_KEY) or {}
    return record.get('network_g') or opt['network_g'], record.get('quant') or opt.get('quant')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('experiments', nargs='+', help='experiment names under experiments/')
    parser.add_argument('--name', default='qat_ablation', help='results file name (benchmarks/results/<name>.json)')
    parser.add_argument('--checkpoint', default='net_g_latest.pth')
    args = parser.parse_args()

    rows, teacher_scores = [], {}
    for name in args.experiments:
        folder = Path('experiments') / name
        opt = read_options(_options_file(folder))
        val_opt = next(v for k, v in opt['datasets'].items() if k.startswith('val'))
        dataset = build_dataset(val_opt)
        checkpoint = folder / 'models' / args.checkpoint
        network_opt, quant_opt = _trained_options(checkpoint, opt)
        student, teacher = load_networks(network_opt, quant_opt, str(checkpoint))
        int8 = evaluate(student, dataset, desc=f'{name} int8')
        teacher_key = opt['path'].get('pretrain_network_g') or name  # ablations share one FP32 start: score it once
        if teacher_key not in teacher_scores:
            teacher_scores[teacher_key] = evaluate(teacher, dataset, desc=f'{name} fp32') if teacher else None
        fp32 = teacher_scores[teacher_key]
        row = {'experiment': name, 'dataset': val_opt['name'], 'sigma': val_opt.get('sigma'),
               'iters': opt['train']['total_iter'], 'psnr_int8': int8['psnr'], 'ssim_int8': int8['ssim']}
        if fp32 is not None:
            row.update(psnr_fp32=fp32['psnr'], ssim_fp32=fp32['ssim'], drop_db=fp32['psnr'] - int8['psnr'],
                       retention=int8['psnr'] / fp32['psnr'])
        rows.append(row)
        print(markdown_table([row], [c for c in COLUMNS if c[0] in row]))
    table = markdown_table(rows, COLUMNS)
    print(table)
    info = run_info(command_line(), torch.get_num_threads(), checkpoint=args.checkpoint)
    print('wrote', write_results(RESULTS_DIR, args.name, rows, info, table)['json'])


if __name__ == '__main__':
    main()
