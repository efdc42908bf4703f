"""Why ``options/qdr_dncnn_sigma25.yml`` calibrates on 128x128 crops: activations at zero-padded bright edges.

1. **Edges.** For every training image (with the noise of ``datasets.train.sigma``, seeded per image), the largest
   input of the conv ``--layer`` and the row / column where it is; prints the ``--top`` images and the median over
   all images. Zero padding turns a bright image edge into a step from 0 to ~1, and a deep DnCNN layer answers it
   with activations far beyond anything inside an image.
2. **Start point.** The options' ``quant`` block is applied to the FP32 network and calibrated on ``--num-calib``
   noisy crops of each side in ``--sizes`` (:func:`qdr_plugin.data.calibration.calibration_inputs`, deterministic;
   :func:`qdr_plugin.prepare.prepare`); the
   fake-quantized network is scored on ``--dataset`` before any training, against FP32 (docs/evaluation.md).

    python benchmarks/calibration_edges.py -opt options/qdr_dncnn_sigma25.yml \
        --ckpt experiments/pretrained_models/dncnn_sigma25.pth
"""

from __future__ import annotations

# isort: off
import qdr_plugin  # noqa: F401  (first: registers the plugin and lets basicsr 1.4.2 import)
# isort: on

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from basicsr.archs import build_network
from tqdm import tqdm

from qdr_plugin.bench.protocol import denoise_set
from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.data import GaussianNoiseDataset
from qdr_plugin.data.calibration import calibration_inputs
from qdr_plugin.deploy.options import read_options
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import QuantConfig, fold_batchnorm
from qdr_plugin.utils.evaluation import evaluate

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
SCAN_COLUMNS = [('image', 'image', ''), ('max', 'max', '.4f'), ('row', 'row', ''), ('col', 'col', ''),
                ('height', 'height', ''), ('width', 'width', '')]
START_COLUMNS = [('calibration crops', 'calibration crops', ''), ('method', 'method', ''), ('psnr', 'psnr', '.4f'),
                 ('fp32', 'fp32', '.4f'), ('drop_db', 'drop_db', '.4f')]


def edge_scan(net: torch.nn.Module, layer: str, folder: Path, sigma: float) -> list[dict]:
    """Per training image: the largest input of ``layer`` and its position (row, column). The images get
    :class:`GaussianNoiseDataset`'s seeded validation noise (``phase: test``)."""
    modules = dict(net.named_modules())
    if layer not in modules:
        raise SystemExit(f'calibration_edges.py: --layer {layer!r} is not a module of the network; '
                         f'choose one of {", ".join(n for n, m in modules.items() if isinstance(m, torch.nn.Conv2d))}.')
    seen: dict[str, torch.Tensor] = {}
    handle = modules[layer].register_forward_hook(lambda m, i, o: seen.update(x=i[0]))
    dataset = GaussianNoiseDataset({'name': folder.name, 'phase': 'test', 'dataroot_gt': str(folder), 'in_ch': 1,
                                    'sigma': sigma})
    rows = []
    try:
        for i in tqdm(range(len(dataset)), desc='edge scan', unit='img'):
            with torch.no_grad():
                net(dataset[i]['lq'][None])
            amax = seen['x'][0].amax(dim=0)
            row, col = divmod(int(amax.argmax()), amax.shape[1])
            rows.append({'image': Path(dataset.paths[i]).name, 'max': float(amax.max()), 'row': row, 'col': col,
                         'height': amax.shape[0], 'width': amax.shape[1]})
    finally:
        handle.remove()
    return sorted(rows, key=lambda r: -r['max'])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', required=True, help='the QDR options file (network_g, quant, datasets.train)')
    parser.add_argument('--ckpt', required=True, help='the FP32 checkpoint ({"params": ...})')
    parser.add_argument('--layer', default='dncnn.26', help='the conv whose input is scanned (default the middle one)')
    parser.add_argument('--top', type=int, default=8, help='how many images of the scan to print')
    parser.add_argument('--sizes', type=int, nargs='+', default=[40, 128], help='calibration crop sides to compare')
    parser.add_argument('--num-calib', type=int, default=64, help='calibration crops per side')
    parser.add_argument('--data-root', default='../shared/datasets', help='the folder holding --dataset')
    parser.add_argument('--dataset', default='Set12', help='the set the start point is scored on')
    args = parser.parse_args()

    opt = read_options(args.opt)
    train_opt = dict(opt['datasets']['train'])
    if not isinstance(train_opt.get('sigma'), (int, float)):
        raise SystemExit(f'calibration_edges.py: {args.opt} has no fixed datasets.train.sigma (a sigma_range is not '
                         'scanned); give options trained at one noise level, e.g. options/qdr_dncnn_sigma25.yml.')
    net = build_network(copy.deepcopy(opt['network_g']))
    net.load_state_dict(torch.load(args.ckpt, map_location='cpu', weights_only=True)['params'])
    net.eval()
    fold_batchnorm(net)

    scan = edge_scan(net, args.layer, Path(train_opt['dataroot_gt']), float(train_opt['sigma']))
    median = float(np.median([r['max'] for r in scan]))
    print(f'\nlargest input of {args.layer} per training image (median over {len(scan)} images: {median:.2f})')
    print(markdown_table(scan[: args.top], SCAN_COLUMNS))

    bench_set = denoise_set(args.data_root, args.dataset, float(train_opt['sigma']))
    fp32 = evaluate(net, bench_set.dataset, desc='FP32')['psnr']
    config = QuantConfig.from_options(opt.get('quant'))
    starts = []
    for size in args.sizes:
        crops = [torch.from_numpy(a) for a in calibration_inputs(train_opt, args.num_calib, size)]
        quantized = prepare(copy.deepcopy(net), opt['network_g'], config, crops).network
        psnr = evaluate(quantized.eval(), bench_set.dataset, desc=f'INT8, {size}x{size} calibration')['psnr']
        starts.append({'calibration crops': f'{args.num_calib} x {size}x{size}', 'method': config.calibration,
                       'psnr': psnr, 'fp32': fp32, 'drop_db': fp32 - psnr})
    print(f'\nstart of QAT on {args.dataset}, sigma {train_opt["sigma"]} (fake-quant, before any training)')
    table = markdown_table(starts, START_COLUMNS)
    print(table)
    rows = [{'edge_scan': scan[: args.top], 'edge_scan_median': median}, *starts]
    paths = write_results(RESULTS_DIR, 'calibration_edges', rows, run_info(command_line(), torch.get_num_threads()),
                          table)
    print(f'\nwritten: {paths["json"]}')


if __name__ == '__main__':
    main()
