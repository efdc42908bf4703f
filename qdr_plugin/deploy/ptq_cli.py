"""``basicsr ptq``: the post-training quantization baseline. The FP32 network of a checkpoint is exported to ONNX,
quantized by ONNX Runtime's ``quantize_static`` (Q/DQ format, per-channel int8 weights), calibrated on noisy crops
of the options' training set (``datasets.train``), written to ``--out`` and checked."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from qdr_plugin.data.calibration import calibration_inputs
from qdr_plugin.quant import is_quantized
from qdr_plugin.utils.checkpoint import load_networks

from .check import check_onnx
from .onnx_export import TARGETS, ExportError, export_onnx
from .options import input_channels, read_options
from .ptq import METHODS, quantize_onnx_ptq


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr ptq', description=__doc__)
    parser.add_argument('-opt', required=True, help='the options YAML (network_g, and datasets.train to calibrate on)')
    parser.add_argument('--ckpt', required=True,
                        help="FP32 checkpoint ({'params': ...}); of a QDR checkpoint its FP32 teacher is used")
    parser.add_argument('--out', required=True, help='the INT8 ONNX file to write')
    parser.add_argument('--calib', required=True, help=f'calibration method: {", ".join(METHODS)}')
    parser.add_argument('--target', choices=TARGETS, default='onnxruntime')
    parser.add_argument('--num-calib', type=int, default=32, help='number of calibration crops (default 32)')
    parser.add_argument('--calib-size', type=int, default=None,
                        help='side of the calibration crops (default: datasets.train.gt_size)')
    return parser


def _fail(message: str) -> NoReturn:
    sys.exit(f'basicsr ptq: {message}')


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.calib not in METHODS:
        _fail(f"unknown calibration method '{args.calib}': use --calib {' | '.join(METHODS)}.")
    if args.num_calib < 1:
        _fail(f'--num-calib must be >= 1, got {args.num_calib}.')
    try:
        opt = read_options(args.opt)
        train_opt = (opt.get('datasets') or {}).get('train')
        if not isinstance(train_opt, dict):
            raise ValueError(f'{args.opt} has no datasets.train block: add the training dataset to calibrate on.')
        if not Path(args.ckpt).is_file():
            raise FileNotFoundError(f'checkpoint {args.ckpt} does not exist; give the FP32 checkpoint with --ckpt.')
        student, teacher = load_networks(opt['network_g'], opt.get('quant'), args.ckpt)
        if is_quantized(student):
            if teacher is None:
                raise ValueError(f'{args.ckpt} is a quantized checkpoint without an FP32 teacher '
                                 "('params_teacher'); give the FP32 checkpoint the QDR run started from.")
            net = teacher
        else:
            net = student
        calibration = calibration_inputs(train_opt, args.num_calib, args.calib_size)
        with tempfile.TemporaryDirectory(prefix='qdr_ptq_') as tmp:
            fp32 = export_onnx(net, Path(tmp) / 'fp32.onnx', input_channels(opt), args.target, fp32=True)
            print(f'calibrating ({args.calib}, {len(calibration)} crops of '
                  f'{"x".join(map(str, calibration[0].shape))}) for {args.target} ...', flush=True)
            out = quantize_onnx_ptq(fp32, args.out, calibration, args.calib, args.target)
    except (ExportError, ValueError, FileNotFoundError, KeyError, RuntimeError) as error:
        _fail(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    report = check_onnx(out, args.target)
    print(report.summary())
    if report.problems:
        sys.exit(1)
