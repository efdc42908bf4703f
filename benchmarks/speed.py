r"""Speed at 256x256: FP32 PyTorch, FP32 ONNX Runtime, INT8 ONNX Runtime (our export) and INT8 ONNX Runtime (ORT PTQ),
for the EFM and the pretrained DnCNN, in one run; ratios to FP32 ONNX Runtime (docs/evaluation.md).

Speed does not depend on the weights' values, but the numbers use real ones where they exist: trained EFMs given as
``--efm OPTIONS CKPT`` (the FP32 teacher of a QDR checkpoint, quantized with the options' ``quant`` block; without
any, a freshly initialised width-32 EFM), DnCNN from ``../shared/weights/DnCNN``. The INT8 networks are calibrated on
the demo images (our export: :func:`qdr_plugin.prepare.prepare` with the options' ``quant`` block, its calibration
method included; PTQ: ORT's MinMax).

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
from torch import nn

from qdr_plugin.archs import EFM, DnCNN
from qdr_plugin.archs.basicsr_defaults import network_input_channels
from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.bench.timing import interleaved_median_seconds, median_seconds
from qdr_plugin.deploy import export_onnx, onnxruntime_kernel_counts
from qdr_plugin.deploy.options import read_options
from qdr_plugin.deploy.ptq import quantize_onnx_ptq
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import QuantConfig, fold_batchnorm
from qdr_plugin.utils.checkpoint import load_networks
from qdr_plugin.utils.complexity import count_macs, count_parameters
from qdr_plugin.utils.dncnn_convert import load_dncnn_module_state

ROOT = Path(__file__).resolve().parents[1]
DNCNN_WEIGHTS = ROOT.parent / 'shared' / 'weights' / 'DnCNN' / 'dncnn_pytorch_sigma25_model.pth'
DEMO = ROOT / 'datasets' / 'demo' / 'train'
RESULTS_DIR = ROOT / 'benchmarks' / 'results'
COLUMNS = [('model', 'model', ''), ('runtime', 'runtime', ''), ('fps', 'fps', '.2f'),
           ('speedup_vs_fp32_ort', 'speedup_vs_fp32_ort', '.2f'), ('int8_convs', 'int8_convs', ''),
           ('float_convs', 'float_convs', ''), ('params', 'params', ''), ('gmacs', 'gmacs', '.2f')]


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


def _trained_efm(options_path: str, ckpt: str) -> tuple[nn.Module, dict, QuantConfig]:
    """The FP32 network of a QDR checkpoint (its teacher; the network itself for an FP32 one), with the options'
    ``network_g`` and quantization config."""
    opt = read_options(options_path)
    student, teacher = load_networks(opt['network_g'], opt.get('quant'), ckpt)
    return (teacher if teacher is not None else student, opt['network_g'],
            QuantConfig.from_options(opt.get('quant')))


def _untrained_efm(width: int) -> tuple[nn.Module, dict, QuantConfig]:
    network_opt = {'type': 'EFM', 'in_ch': 1, 'width': width}
    return EFM(in_ch=1, width=width), network_opt, QuantConfig()


def model_files(net: nn.Module, network_opt: dict, config: QuantConfig, folder: Path) -> dict[str, Path]:
    """The three ONNX files of one FP32 network, made without timing anything: its FP32 export, the QDR INT8 export
    (:func:`qdr_plugin.prepare.prepare` with ``config``, calibrated on the demo crops) and ONNX Runtime's PTQ
    (MinMax, the same crops) of the FP32 file."""
    channels = network_input_channels(network_opt) or 1  # EFM's and DnCNN's default
    crops = _calibration_crops(channels)
    fp32_path = export_onnx(net, folder / 'fp32.onnx', channels, fp32=True)
    quantized = prepare(copy.deepcopy(net), network_opt, config, crops).network
    int8_path = export_onnx(quantized.eval(), folder / 'int8.onnx', channels, 'onnxruntime')
    ptq_path = quantize_onnx_ptq(fp32_path, folder / 'ptq.onnx', [c.numpy() for c in crops], 'minmax')
    return {'FP32 ONNX Runtime': fp32_path, 'INT8 ONNX Runtime (QDR export)': int8_path,
            'INT8 ONNX Runtime (ORT PTQ)': ptq_path}


def _networks(
    efms: list[tuple[str, str]], dncnn_opt: str, efm_widths: list[int]
) -> dict[str, tuple[nn.Module, dict, QuantConfig]]:
    """The FP32 networks, each with its ``network_g`` and the quantization config its QDR options use."""
    nets = {}
    for options_path, ckpt in efms:
        nets[f"{read_options(options_path)['network_g']['type']}, {Path(options_path).stem}"] = _trained_efm(
            options_path, ckpt)
    if not efms:
        nets['EFM (gray), width 32, untrained'] = _untrained_efm(32)
    for width in efm_widths:
        nets[f'EFM (gray), width {width}, untrained'] = _untrained_efm(width)
    if DNCNN_WEIGHTS.is_file():
        dncnn = DnCNN()
        dncnn.load_state_dict(load_dncnn_module_state(DNCNN_WEIGHTS))
        fold_batchnorm(dncnn.eval())
        opt = read_options(dncnn_opt)
        nets['DnCNN-S (pretrained)'] = (dncnn, opt['network_g'], QuantConfig.from_options(opt.get('quant')))
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
        for name, (net, network_opt, config) in _networks(args.efm, args.dncnn_opt, args.efm_widths).items():
            net = net.eval()
            channels = network_input_channels(network_opt) or 1
            x = torch.rand(1, channels, args.size, args.size)
            files = model_files(net, network_opt, config, Path(tmp))
            int8_path, ptq_path = files['INT8 ONNX Runtime (QDR export)'], files['INT8 ONNX Runtime (ORT PTQ)']
            with torch.no_grad():
                seconds = {'FP32 PyTorch': median_seconds(lambda n=net, i=x: n(i), args.runs)}
            feed = {'input': x.numpy()}
            sessions = {label: _session(path, args.threads) for label, path in files.items()}
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
    table = markdown_table(rows, COLUMNS)
    print(table)
    info = run_info(command_line(), args.threads, size=args.size, runs=args.runs, rounds=args.rounds)
    print('wrote', write_results(RESULTS_DIR, 'speed', rows, info, table)['json'])


if __name__ == '__main__':
    main()
