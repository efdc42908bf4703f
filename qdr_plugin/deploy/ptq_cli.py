"""``basicsr ptq``: the post-training quantization baseline. The FP32 network of a checkpoint is exported to ONNX,
quantized by ONNX Runtime's ``quantize_static`` (Q/DQ format, per-channel int8 weights), calibrated on noisy crops
of the options' training set (``datasets.train``), written to ``--out`` and checked."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from torch import nn

from qdr_plugin.data.calibration import calibration_inputs
from qdr_plugin.errors import UserError
from qdr_plugin.quant import is_quantized
from qdr_plugin.utils.checkpoint import load_networks
from qdr_plugin.utils.output_paths import check_output_file

from .check import check_onnx
from .onnx_export import TARGETS, export_onnx
from .options import input_channels, read_options
from .ptq import METHODS, quantize_onnx_ptq


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr ptq', description=__doc__)
    parser.add_argument('-opt', required=True, help='the options YAML (network_g, and datasets.train to calibrate on)')
    parser.add_argument('--ckpt', required=True,
                        help="FP32 checkpoint ({'params': ...}); of a QDR checkpoint its FP32 teacher is used")
    parser.add_argument('--out', required=True,
                        help='the INT8 ONNX file to write (refused if it exists, see --overwrite)')
    parser.add_argument('--overwrite', action='store_true', help='replace --out if it exists')
    parser.add_argument('--calib', required=True, help=f'calibration method: {", ".join(METHODS)}')
    parser.add_argument('--target', choices=TARGETS, default='onnxruntime')
    parser.add_argument('--no-vnni', action='store_true',
                        help='onnxruntime target, for an x86 CPU without VNNI: int8 weights that its kernels would '
                        'saturate stored as uint8 (as basicsr export --no-vnni)')
    parser.add_argument('--num-calib', type=int, default=32, help='number of calibration crops (default 32)')
    parser.add_argument('--calib-size', type=int, default=None,
                        help='side of the calibration crops (default: datasets.train.gt_size)')
    return parser


def _float_network(ckpt: str, student: nn.Module, teacher: nn.Module | None) -> nn.Module:
    """The FP32 network to quantize: the checkpoint's own, or of a QDR checkpoint its FP32 teacher."""
    if not is_quantized(student):
        return student
    if teacher is None:
        raise UserError(f"checkpoint {ckpt} is quantized and has no FP32 teacher ('params_teacher'); give the FP32 "
                        'checkpoint the QDR run started from.')
    return teacher


def _check_arguments(args: argparse.Namespace) -> dict:
    """Check the flags, the output path and the options before any work; returns the options."""
    if args.calib not in METHODS:
        raise UserError(f"unknown calibration method '{args.calib}': use --calib {' | '.join(METHODS)}.")
    if args.num_calib < 1:
        raise UserError(f'--num-calib must be >= 1, got {args.num_calib}.')
    check_output_file(args.out, '--out', args.overwrite, {'--ckpt': args.ckpt, '-opt': args.opt}, 'ptq.onnx')
    opt = read_options(args.opt)
    if not isinstance((opt.get('datasets') or {}).get('train'), dict):
        raise UserError(f'-opt {args.opt} has no datasets.train block: add the training dataset to calibrate on.')
    return opt


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``basicsr ptq``; a problem the user can fix raises :class:`~qdr_plugin.errors.UserError`
    (the ``basicsr`` command prints it as one line), a file the checker finds problems in exits with status 1."""
    args = _parser().parse_args(argv)
    opt = _check_arguments(args)
    net = _float_network(args.ckpt, *load_networks(opt['network_g'], opt.get('quant'), args.ckpt, '--ckpt'))
    try:
        calibration = calibration_inputs(opt['datasets']['train'], args.num_calib, args.calib_size)
        with tempfile.TemporaryDirectory(prefix='qdr_ptq_') as tmp:
            fp32 = export_onnx(net, Path(tmp) / 'fp32.onnx', input_channels(opt), args.target, fp32=True)
            print(f'calibrating ({args.calib}, {len(calibration)} crops of '
                  f'{"x".join(map(str, calibration[0].shape))}) for {args.target} ...', flush=True)
            out = quantize_onnx_ptq(fp32, args.out, calibration, args.calib, args.target, args.no_vnni)
    except UserError:
        raise
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as error:
        message = str(error).strip()
        raise UserError(message.splitlines()[0] if message else type(error).__name__) from error
    report = check_onnx(out, args.target)
    print(report.summary())
    if report.problems:
        sys.exit(1)
