"""Cost of one training step: plain FP32 (basicsr's SRModel) vs QAT vs QDR (QAT + teacher + DFD + LMR).

All three are built from the same options file (network, batch size, patch size), run in one process on the same
batches, interleaved, and timed as the median of ``--steps`` calls to ``optimize_parameters`` after warm-up.

    python benchmarks/step_cost.py -opt options/qdr_denoise_bsd68.yml --steps 30
"""

from __future__ import annotations

# isort: off
import qdr_plugin  # noqa: F401  (first: registers the plugin and lets basicsr 1.4.2 import)
# isort: on

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from basicsr.data import build_dataset
from basicsr.models import build_model

from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.deploy.options import read_options

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
COLUMNS = [('step', 'step', ''), ('median_s', 'median_s', '.4f'), ('ratio_to_fp32', 'ratio_to_fp32', '.3f')]


def _variants(opt: dict) -> dict[str, dict]:
    fp32 = copy.deepcopy(opt)
    fp32['model_type'] = 'SRModel'
    for key in ('dfd_opt', 'lmr_opt', 'output_kd_opt', 'fp32_warmup_iter'):
        fp32['train'].pop(key, None)
    qat = copy.deepcopy(opt)
    qat['train']['fp32_warmup_iter'] = 0
    for key in ('dfd_opt', 'lmr_opt', 'output_kd_opt'):
        qat['train'].pop(key, None)
    qdr = copy.deepcopy(opt)
    qdr['train']['fp32_warmup_iter'] = 0
    return {'fp32 (SRModel)': fp32, 'QAT (QDRModel, no KD)': qat, 'QDR (QAT + teacher + DFD + LMR)': qdr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', default='options/qdr_denoise_bsd68.yml')
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--train-root', default='datasets/demo/train', help='images for batches and calibration')
    args = parser.parse_args()

    opt = read_options(args.opt)
    opt.update(dist=False, is_train=True)  # what basicsr's parse_options adds for a single-process training run
    opt['datasets']['train']['dataroot_gt'] = args.train_root
    opt['path']['pretrain_network_g'] = None
    opt['quant'] = dict(opt.get('quant') or {}, calib_batches=2)
    dataset = build_dataset(opt['datasets']['train'])
    batch_size = opt['datasets']['train']['batch_size_per_gpu']
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    batches = [b for _, b in zip(range(4), loader)]

    torch.manual_seed(0)
    models = {name: build_model(variant) for name, variant in _variants(opt).items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for step in range(args.steps + 3):
        for name, model in models.items():
            model.feed_data(batches[step % len(batches)])
            start = time.perf_counter()
            model.optimize_parameters(step + 1)
            if step >= 3:
                times[name].append(time.perf_counter() - start)

    base = statistics.median(times['fp32 (SRModel)'])
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        rows.append({'step': name, 'median_s': round(median, 4), 'ratio_to_fp32': round(median / base, 3)})
    shape = f'{batch_size}x{opt["network_g"].get("in_ch", 1)}x{opt["datasets"]["train"]["gt_size"]}^2'
    print(f'network {opt["network_g"]["type"]} {dict(opt["network_g"])}, batch {shape}, {args.steps} steps')
    table = markdown_table(rows, COLUMNS)
    print(table)
    info = run_info(command_line(), torch.get_num_threads(), steps=args.steps, batch=shape)
    print('wrote', write_results(RESULTS_DIR, 'step_cost', rows, info, table)['json'])


if __name__ == '__main__':
    main()
