"""``basicsr export``: checkpoint -> ONNX (INT8 Q/DQ with the learned step sizes, 4-bit weights as INT4 with
``--int4``, or FP32), then the checker."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

from qdr_plugin.errors import UserError
from qdr_plugin.quant import QuantConfig
from qdr_plugin.utils.atomic_write import atomic_write_bytes
from qdr_plugin.utils.checkpoint import load_networks
from qdr_plugin.utils.output_paths import check_output_file

from .check import check_onnx
from .int4 import INT4_OPSET, int4_weights
from .kernel_report import kernel_report
from .no_vnni import int8_weights_saturate, saturating_weight_count
from .onnx_export import OPSET, TARGETS, export_onnx
from .options import input_channels, read_options
from .ort_profile import op_times


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr export', description=__doc__)
    parser.add_argument('-opt', required=True, help='the options YAML the checkpoint was trained with')
    parser.add_argument('--ckpt', required=True, help="checkpoint ({'params': ...}; a QDR checkpoint is quantized)")
    parser.add_argument('--out', required=True, help='the ONNX file to write (refused if it exists, see --overwrite)')
    parser.add_argument('--overwrite', action='store_true', help='replace --out if it exists')
    parser.add_argument('--target', choices=TARGETS, default='onnxruntime')
    parser.add_argument('--fp32', action='store_true', help='export the same network without quantization')
    parser.add_argument('--opset', type=int, default=OPSET)
    parser.add_argument('--int4', action='store_true',
                        help='store 4-bit weights as INT4 (ONNX opset 21; half the bytes of INT8; ONNX Runtime only, '
                        'the convolutions still run in float)')
    parser.add_argument('--no-vnni', action='store_true',
                        help='onnxruntime target, for an x86 CPU without VNNI (AVX2 only): store the int8 weights '
                        'that its kernels would saturate as uint8, so the file computes the trained numbers there '
                        '(a slower integer kernel; docs/deployment.md#cpus-without-vnni)')
    parser.add_argument('--profile', action='store_true',
                        help='onnxruntime target: also run the file a few times in ONNX Runtime\'s profiler and '
                        'name the float op types that take the most time')
    return parser


def _check_int4(args: argparse.Namespace, opt: dict) -> None:
    if not args.int4:
        return
    bits = QuantConfig.from_options(opt.get('quant')).weight_bits
    if args.fp32 or bits > 4:
        what = 'an FP32 export' if args.fp32 else f'weights of {bits} bits (quant.weight_bits: {bits})'
        raise UserError(f'--int4 stores 4-bit weights, and this is {what}: export a checkpoint trained with '
                        'quant.weight_bits: 4, or leave out --int4.')
    if args.target != 'onnxruntime':
        raise UserError('--int4 is for --target onnxruntime: TensorRT takes INT4 only as weight-only quantization of '
                        'GEMM / MatMul weights, not of convolutions.')


def _store_int4(path: Path) -> None:
    model, converted = int4_weights(onnx.load(str(path)))
    atomic_write_bytes(path, model.SerializeToString())
    print(f'  {converted} weight tensors stored as INT4 (opset {INT4_OPSET})')


def print_kernel_report(path: str | Path, profile: bool, threads: int = 1) -> None:
    """Print which convolutions and element-wise ops ONNX Runtime runs of ``path`` as integer kernels and which in
    float (:func:`~qdr_plugin.deploy.kernel_report.kernel_report`); with ``profile``, also the float op types that
    take the most kernel time (ONNX Runtime's profiler, a few runs at 256 x 256 with ``threads`` threads)."""
    times = op_times(path, threads=threads) if profile else None
    print('\n'.join(f'  {line}' for line in kernel_report(path).lines(times)))


def _note_saturation(path: Path, args: argparse.Namespace) -> None:
    """Say when this CPU would run the ONNX Runtime file inexactly (:mod:`qdr_plugin.deploy.no_vnni`)."""
    if args.fp32 or args.int4 or args.no_vnni or args.target != 'onnxruntime' or not int8_weights_saturate():
        return
    count = saturating_weight_count(onnx.load(str(path)))
    if count:
        print(f'  note: this CPU has no VNNI, and {count} int8 weight tensors of the file hold values outside '
              '[-64, 63], which its integer kernels saturate: the file is exact on CPUs with VNNI. For CPUs '
              'without it, train with quant.weight_bits: 7 (exact and fast everywhere), or export again with '
              '--no-vnni (exact, at about the FP32 file\'s speed).')


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``basicsr export``; a problem the user can fix raises :class:`~qdr_plugin.errors.UserError`
    (the ``basicsr`` command prints it as one line), a file the checker finds problems in exits with status 1."""
    args = _parser().parse_args(argv)
    out = check_output_file(args.out, '--out', args.overwrite, {'--ckpt': args.ckpt, '-opt': args.opt}, 'model.onnx')
    if args.no_vnni and args.int4:
        raise UserError('--no-vnni changes int8 weights and --int4 stores 4-bit ones: leave out one of them.')
    opt = read_options(args.opt)
    _check_int4(args, opt)
    student, _ = load_networks(opt['network_g'], opt.get('quant'), args.ckpt, '--ckpt')
    path = export_onnx(student, out, input_channels(opt), args.target, args.fp32, args.opset, args.no_vnni)
    if args.int4:
        _store_int4(Path(path))
    _note_saturation(Path(path), args)
    report = check_onnx(path, None if args.fp32 else args.target, None if args.fp32 else student)
    print(report.summary())
    if not args.fp32 and args.target == 'onnxruntime':
        print_kernel_report(path, args.profile)
    if report.problems:
        sys.exit(1)
