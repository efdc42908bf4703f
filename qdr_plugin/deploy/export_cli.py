"""``basicsr export``: checkpoint -> ONNX (INT8 Q/DQ with the learned step sizes, or FP32), then the checker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qdr_plugin.utils.checkpoint import load_networks

from .check import check_onnx, onnxruntime_kernel_counts
from .onnx_export import OPSET, TARGETS, ExportError, export_onnx
from .options import input_channels, read_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr export', description=__doc__)
    parser.add_argument('-opt', required=True, help='the options YAML the checkpoint was trained with')
    parser.add_argument('--ckpt', required=True, help="checkpoint ({'params': ...}; a QDR checkpoint is quantized)")
    parser.add_argument('--out', required=True, help='the ONNX file to write')
    parser.add_argument('--target', choices=TARGETS, default='onnxruntime')
    parser.add_argument('--fp32', action='store_true', help='export the same network without quantization')
    parser.add_argument('--opset', type=int, default=OPSET)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        opt = read_options(args.opt)
        if not Path(args.ckpt).is_file():
            raise FileNotFoundError(f'checkpoint {args.ckpt} does not exist.')
        student, _ = load_networks(opt['network_g'], opt.get('quant'), args.ckpt)
        path = export_onnx(student, args.out, input_channels(opt), args.target, args.fp32, args.opset)
    except (ExportError, ValueError, FileNotFoundError) as error:
        sys.exit(f'basicsr export: {error}')
    report = check_onnx(path, None if args.fp32 else args.target)
    print(report.summary())
    if not args.fp32 and args.target == 'onnxruntime':
        kernels = onnxruntime_kernel_counts(path)
        integer = sum(n for op, n in kernels.items() if op.startswith('QLinear'))
        floating = sum(kernels.get(op, 0) for op in ('Conv', 'FusedConv', 'ConvTranspose'))
        print(f'  ONNX Runtime runs {kernels.get("QLinearConv", 0)} convolutions as QLinearConv, '
              f'{floating} in float; {integer} integer kernels in all')
    if report.problems:
        sys.exit(1)
