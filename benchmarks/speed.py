r"""Speed at 256x256: FP32 PyTorch, FP32 ONNX Runtime, INT8 ONNX Runtime (our export) and INT8 ONNX Runtime (ORT PTQ),
for the EFM and the pretrained DnCNN, in one run; ratios to FP32 ONNX Runtime (DESIGN.md section 5).

Speed does not depend on the weights' values, but the numbers use real ones where they exist: trained EFMs given as
``--efm OPTIONS CKPT`` (the FP32 teacher of a QDR checkpoint, quantized with the options' ``quant`` block; without
any, a freshly initialised width-32 EFM), DnCNN from ``../shared/weights/DnCNN``. The INT8 networks are calibrated on
the demo images (our export: the engine's calibration, PTQ: ORT's MinMax).

    python benchmarks/speed.py --runs 30
    python benchmarks/speed.py --efm options/qdr_denoise_bsd68_w64.yml \
        experiments/qdr_denoise_bsd68_w64/models/net_g_latest.pth
"""

from __future__ import annotations

# isort: off
import qdr_plugin  # noqa: F401  (first: registers the plugin and lets basicsr 1.4.2 import)
# isort: on

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from common import command_line, markdown_table, write_results
from torch import nn

from qdr_plugin.archs import EFM, DnCNN
from qdr_plugin.bench.timing import interleaved_median_seconds, median_seconds
from qdr_plugin.deploy import export_onnx, onnxruntime_kernel_counts
from qdr_plugin.deploy.options import read_options
from qdr_plugin.deploy.ptq import quantize_onnx_ptq
from qdr_plugin.quant import QuantConfig, calibrate, fold_batchnorm, quantize_model
from qdr_plugin.utils.checkpoint import load_networks
from qdr_plugin.utils.complexity import count_macs, count_parameters
from qdr_plugin.utils.dncnn_convert import load_dncnn_module_state

ROOT = Path(__file__).resolve().parents[1]
DNCNN_WEIGHTS = ROOT.parent / 'shared' / 'weights' / 'DnCNN' / 'dncnn_pytorch_sigma25_model.pth'
DEMO = ROOT / 'datasets' / 'demo' / 'train'


def _calibration_crops(channels: int, count: int = 8, size: int = 64) -> list[torch.Tensor]:
    import cv2

    rng = np.random.default_rng(0)
    crops = []
    for path in sorted(DEMO.glob('*.png'))[:count]:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)[:size, :size] / 255.0
        noisy = img + rng.normal(0, 25 / 255, img.shape)
        crops.append(torch.from_numpy(noisy).float()[None, None].repeat(1, channels, 1, 1))
    return crops


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def _trained_efm(options_path: str, ckpt: str) -> tuple[nn.Module, int, QuantConfig]:
    """The FP32 network of a QDR checkpoint (its teacher; the network itself for an FP32 one), with the options'
    quantization config."""
    opt = read_options(options_path)
    student, teacher = load_networks(opt['network_g'], opt.get('quant'), ckpt)
    return (teacher if teacher is not None else student, opt['network_g'].get('in_ch', 1),
            QuantConfig.from_options(opt.get('quant')))


def _networks(
    efms: list[tuple[str, str]], dncnn_opt: str, efm_widths: list[int]
) -> dict[str, tuple[nn.Module, int, QuantConfig]]:
    """The FP32 networks, each with the quantization config its QDR options use."""
    nets = {}
    for options_path, ckpt in efms:
        nets[f"{read_options(options_path)['network_g']['type']}, {Path(options_path).stem}"] = _trained_efm(
            options_path, ckpt)
    if not efms:
        nets['EFM (gray), width 32, untrained'] = (EFM(in_ch=1), 1, QuantConfig(calibration='percentile'))
    for width in efm_widths:
        nets[f'EFM (gray), width {width}, untrained'] = (EFM(in_ch=1, width=width), 1,
                                                          QuantConfig(calibration='percentile'))
    if DNCNN_WEIGHTS.is_file():
        dncnn = DnCNN()
        dncnn.load_state_dict(load_dncnn_module_state(DNCNN_WEIGHTS))
        fold_batchnorm(dncnn.eval())
        nets['DnCNN-S (pretrained)'] = (dncnn, 1, QuantConfig.from_options(read_options(dncnn_opt).get('quant')))
    else:
        print(f'{DNCNN_WEIGHTS} not found: DnCNN skipped')
    return nets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--runs', type=int, default=30)
    parser.add_argument('--rounds', type=int, default=5, help='the ONNX Runtime rows are timed interleaved, in this '
                        'many passes of runs / rounds each (default 5)')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--efm', nargs=2, action='append', default=[], metavar=('OPTIONS', 'CKPT'),
                        help='a trained EFM: its options file and QDR checkpoint (repeatable)')
    parser.add_argument('--efm-widths', type=int, nargs='*', default=[],
                        help='also time freshly initialised gray EFMs of these widths (default width: 32)')
    parser.add_argument('--dncnn-opt', default='options/qdr_dncnn_sigma25.yml',
                        help="the DnCNN QDR options: their quant block (e.g. keep_fp32) shapes the INT8 graph")
    args = parser.parse_args()
    for options_path, ckpt in args.efm:
        if not Path(options_path).is_file() or not Path(ckpt).is_file():
            parser.error(f'--efm {options_path} {ckpt}: no such file; give an options file and its checkpoint, '
                         'e.g. experiments/<name>/models/net_g_latest.pth')
    torch.set_num_threads(args.threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (net, channels, config) in _networks(args.efm, args.dncnn_opt, args.efm_widths).items():
            net = net.eval()
            x = torch.rand(1, channels, args.size, args.size)
            crops = _calibration_crops(channels)
            fp32_path = export_onnx(net, Path(tmp) / 'fp32.onnx', channels, fp32=True)
            quantized = quantize_model(copy.deepcopy(net), config)
            calibrate(quantized, crops)
            int8_path = export_onnx(quantized.eval(), Path(tmp) / 'int8.onnx', channels, 'onnxruntime')
            ptq_path = quantize_onnx_ptq(fp32_path, Path(tmp) / 'ptq.onnx', [c.numpy() for c in crops], 'minmax')
            with torch.no_grad():
                seconds = {'FP32 PyTorch': median_seconds(lambda n=net, i=x: n(i), args.runs)}
            feed = {'input': x.numpy()}
            sessions = {label: _session(path, args.threads) for label, path in (
                ('FP32 ONNX Runtime', fp32_path), ('INT8 ONNX Runtime (QDR export)', int8_path),
                ('INT8 ONNX Runtime (ORT PTQ)', ptq_path))}
            calls = {label: (lambda s=session, f=feed: s.run(None, f)) for label, session in sessions.items()}
            seconds.update(interleaved_median_seconds(calls, args.runs, rounds=args.rounds))
            base = seconds['FP32 ONNX Runtime']
            kernels = {label: onnxruntime_kernel_counts(p) for label, p in (('ours', int8_path), ('ptq', ptq_path))}
            for label, value in seconds.items():
                row = {'model': name, 'runtime': label, 'fps': round(1 / value, 2),
                       'speedup_vs_fp32_ort': round(base / value, 2), 'params': count_parameters(net),
                       'gmacs': round(count_macs(net, (1, channels, args.size, args.size)) / 1e9, 2)}
                if 'QDR' in label or 'PTQ' in label:
                    k = kernels['ours' if 'QDR' in label else 'ptq']
                    row['int8_convs'] = k.get('QLinearConv', 0)
                    row['float_convs'] = k.get('Conv', 0) + k.get('FusedConv', 0) + k.get('ConvTranspose', 0)
                rows.append(row)
    print(f'input 1x1x{args.size}x{args.size}, median of {args.runs} runs, {args.threads} threads; ONNX Runtime '
          f'rows interleaved in {args.rounds} rounds')
    print(markdown_table(rows, ['model', 'runtime', 'fps', 'speedup_vs_fp32_ort', 'int8_convs', 'float_convs',
                                'params', 'gmacs']))
    print('wrote', write_results('speed', rows, command_line()))


if __name__ == '__main__':
    main()
