r"""INT8 files on the CPU this runs on, with and without the forms for CPUs without VNNI (docs/deployment.md): the
default ``onnxruntime`` file, the ``--no-vnni`` file (uint8 weights where int8 would saturate) and the default file
of the same network with 7-bit weights (``quant.weight_bits: 7``), each scored on a test set beside its PyTorch
fake-quant network and the FP32 file, its parity with the fake-quant network, and its speed as a ratio to the FP32
file (timed interleaved, ``--repeats`` times; median and range).

    python benchmarks/no_vnni.py --net dncnn --no-speed                # DnCNN-S, published weights, BSD68 sigma 25
    python benchmarks/no_vnni.py --net dncnn --speed-only              # on an idle machine
    python benchmarks/no_vnni.py --net restormer_derain --max-images 20 --no-speed   # the deraining Restormer, Rain100H

The INT8 networks are calibrated, not trained: the plugin's quantizers with the options' ``quant`` block, on crops of
the options' training set (``datasets.train``, never the test set). A file's parity with its fake-quant network and
its speed do not depend on training; the 7-bit row's quality cost is that of calibration alone (QAT recovers part of
it). Writes ``benchmarks/results/no_vnni_<net>[_vnni_cpu][_speed].{json,csv,md}`` (``_vnni_cpu`` when the CPU it
runs on has VNNI, ``_speed`` with ``--speed-only``).
"""

from __future__ import annotations

# isort: off
import qdr_plugin  # noqa: F401  (first: registers the plugin and lets basicsr 1.4.2 import)
# isort: on

import argparse
import copy
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qdr_plugin.archs import DnCNN
from qdr_plugin.bench.models import BenchModel
from qdr_plugin.bench.protocol import denoise_set, paired_set
from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.bench.runner import run_benchmark
from qdr_plugin.bench.timing import frames_per_second
from qdr_plugin.data.calibration import calibration_inputs
from qdr_plugin.deploy import export_onnx
from qdr_plugin.deploy.infer import onnx_restorer, torch_restorer
from qdr_plugin.deploy.no_vnni import int8_weights_saturate
from qdr_plugin.deploy.options import read_options
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import QuantConfig, fold_batchnorm
from qdr_plugin.utils.checkpoint import load_networks
from qdr_plugin.utils.dncnn_convert import load_dncnn_module_state

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
RESULTS_DIR = ROOT / 'benchmarks' / 'results'
NETS = {
    'dncnn': ('options/qdr_dncnn_sigma25.yml', SHARED / 'weights' / 'DnCNN' / 'dncnn_pytorch_sigma25_model.pth'),
    'restormer_derain': ('options/hybrid/restormer_derain.yml', ROOT / 'benchmarks' / 'checkpoints' /
                         'restormer_derain_fp32.pth'),
}
COLUMNS = [('model', 'model', ''), ('runtime', 'runtime', ''), ('psnr', 'PSNR', '.3f'), ('ssim', 'SSIM', '.4f'),
           ('parity_db', 'parity to fake-quant (dB, 8-bit outputs)', '.1f'),
           ('parity_max_steps', 'largest difference (8-bit steps)', ''),
           ('speedup', 'speed-up vs FP32 file (median)', '.2f'), ('speedup_range', 'range', '')]
FORMS = {  # file label -> (weight bits, no_vnni)
    'INT8': (8, False),
    'INT8 --no-vnni': (8, True),
    'INT8, 7-bit weights': (7, False),
}


def _fp32_network(name: str, opt: dict) -> nn.Module:
    options_path, weights = NETS[name]
    if not weights.is_file():
        raise SystemExit(f'{weights} not found: the {name} weights are needed.')
    if name == 'dncnn':
        net = DnCNN()
        net.load_state_dict(load_dncnn_module_state(weights))
        fold_batchnorm(net.eval())
        return net
    student, _ = load_networks(opt['network_g'], None, str(weights))
    return student.eval()


def _parity(ours: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, int]:
    """PSNR between two lists of 8-bit outputs (over all their pixels) and their largest difference."""
    diff = np.concatenate([(a.astype(np.float64) - b.astype(np.float64)).ravel() for a, b in zip(ours, reference)])
    mse = float(np.mean(diff ** 2)) / 255.0 ** 2
    return (round(10 * math.log10(1 / mse), 1) if mse else math.inf), int(np.abs(diff).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--net', choices=sorted(NETS), default='dncnn')
    parser.add_argument('--max-images', type=int, default=None, help='score only the first N test images')
    parser.add_argument('--calib', type=int, default=32, help='calibration crops (default 32)')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--size', type=int, default=256, help='side of the timing input (default 256)')
    parser.add_argument('--runs', type=int, default=20, help='timed runs per file and repeat (default 20)')
    parser.add_argument('--repeats', type=int, default=3, help='interleaved timings, each a median (default 3)')
    parser.add_argument('--pause', type=float, default=10.0, help='seconds between timing repeats (default 10)')
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument('--no-speed', action='store_true', help='score only')
    speed.add_argument('--speed-only', action='store_true', help='time only (needs an idle machine)')
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    options_path = NETS[args.net][0]
    opt = read_options(ROOT / options_path)
    net = _fp32_network(args.net, opt)
    channels = 1 if args.net == 'dncnn' else 3
    bench_set = (denoise_set(SHARED / 'datasets', 'BSD68', 25, args.max_images) if args.net == 'dncnn'
                 else paired_set(SHARED / 'datasets', 'Rain100H', args.max_images))
    crops = [torch.from_numpy(c) for c in calibration_inputs(opt['datasets']['train'], args.calib)]
    quant = dict(opt.get('quant') or {})
    networks = {}
    for bits in (8, 7):
        config = QuantConfig.from_options({**quant, 'weight_bits': bits, 'keep_first_last': False})
        networks[bits] = prepare(copy.deepcopy(net), opt['network_g'], config, crops).network.eval()

    models = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {'FP32': export_onnx(net, Path(tmp) / 'fp32.onnx', channels, fp32=True)}
        for label, (bits, no_vnni) in FORMS.items():
            files[label] = export_onnx(networks[bits], Path(tmp) / f'{bits}_{no_vnni}.onnx', channels, 'onnxruntime',
                                       no_vnni=no_vnni)
        for label, path in files.items():
            models.append(BenchModel(label, path, 'onnxruntime', 'fp32' if label == 'FP32' else 'int8', channels,
                                     onnx_restorer(path, args.threads)))
        for bits, network in networks.items():
            models.append(BenchModel(f'fake-quant, {bits}-bit weights', Path(options_path), 'pytorch', 'int8',
                                     channels, torch_restorer(network)))
        rows, outputs = [], {}
        if not args.speed_only:
            rows, outputs = run_benchmark(models, [bench_set], {}, keep=len(bench_set.images))
        else:
            rows = [{'model': m.name, 'runtime': m.runtime} for m in models if m.runtime == 'onnxruntime']
        ratios: dict[str, list[float]] = {label: [] for label in files}
        if not args.no_speed:
            timed = {m.name: (m.restore, channels) for m in models if m.runtime == 'onnxruntime'}
            for repeat in range(args.repeats):
                if repeat:
                    time.sleep(args.pause)
                fps = frames_per_second(timed, args.size, args.runs)
                for label in files:
                    ratios[label].append(fps[label] / fps['FP32'])
    for row in rows:
        bits, _ = FORMS.get(row['model'], (None, None))
        if bits is not None and outputs:
            reference = outputs[bench_set.label, f'fake-quant, {bits}-bit weights']
            row['parity_db'], row['parity_max_steps'] = _parity(outputs[bench_set.label, row['model']], reference)
        values = ratios.get(row['model'])
        if values:
            row['speedup'] = round(statistics.median(values), 3)
            row['speedup_range'] = f'{min(values):.2f}-{max(values):.2f}'
            row['speedup_repeats'] = [round(v, 3) for v in values]
        row.pop('psnr_per_image', None)
    saturates = int8_weights_saturate()
    print(f'{args.net} on {bench_set.label} ({len(bench_set.images)} images); this CPU '
          f'{"has no VNNI (int8 weights saturate)" if saturates else "has VNNI"}; timing {args.threads} thread(s), '
          f'1 x {channels} x {args.size} x {args.size}, {args.repeats} interleaved repeats of {args.runs} runs')
    table = markdown_table(rows, COLUMNS)
    print(table)
    info = run_info(command_line(), args.threads, net=args.net, dataset=bench_set.label, images=len(bench_set.images),
                    cpu_without_vnni=saturates, size=args.size, runs=args.runs, repeats=args.repeats)
    name = f'no_vnni_{args.net}' + ('' if saturates else '_vnni_cpu') + ('_speed' if args.speed_only else '')
    print('wrote', write_results(RESULTS_DIR, name, rows, info, table)['json'])


if __name__ == '__main__':
    main()
