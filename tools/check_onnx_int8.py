"""Check an exported ONNX file: ``python tools/check_onnx_int8.py model.onnx [--target tensorrt]``
``[-opt X.yml --ckpt C.pth]``.

Runs ``onnx.checker``, the I/O contract (``input`` / ``output``, float32 NCHW, dynamic N/H/W), the constants of the
quantization nodes (positive finite scales, integers that fit their type), TensorRT's explicit-quantization rules for
``--target tensorrt``, prints per-op counts, and for ``--target onnxruntime`` how many convolutions ONNX Runtime runs
as integer kernels. With ``-opt`` and ``--ckpt`` (the options file and checkpoint the file was exported from) it also
checks that every stored integer weight is the network's. Exit status 1 when the file has problems, 2 (one line on
stderr) when an input cannot be read.
"""

import argparse
import sys

from qdr_plugin.deploy import check_onnx, onnxruntime_kernel_counts
from qdr_plugin.deploy.options import read_options
from qdr_plugin.errors import UserError
from qdr_plugin.utils.checkpoint import load_networks


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('onnx_file')
    parser.add_argument('--target', choices=('onnxruntime', 'tensorrt'), default=None)
    parser.add_argument('-opt', help='the options YAML the checkpoint was trained with (with --ckpt)')
    parser.add_argument('--ckpt', help='the QDR checkpoint the file was exported from: compare the stored weights')
    return parser


def _check(args: argparse.Namespace) -> int:
    """Check the file, print the report; returns the exit status (1 when the file has problems)."""
    network = None
    if (args.opt is None) != (args.ckpt is None):
        raise UserError('give -opt and --ckpt together (the options file and the checkpoint the file was exported '
                        'from), or neither.')
    if args.ckpt is not None:
        opt = read_options(args.opt)
        network = load_networks(opt['network_g'], opt.get('quant'), args.ckpt, '--ckpt')[0]
    report = check_onnx(args.onnx_file, args.target, network)
    print(report.summary())
    if args.target == 'onnxruntime':
        kernels = onnxruntime_kernel_counts(args.onnx_file)
        print('  ONNX Runtime optimized graph:', ', '.join(f'{k}: {v}' for k, v in sorted(kernels.items())))
    return 1 if report.problems else 0


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        status = _check(args)
    except UserError as error:
        print(f'check_onnx_int8: {error}', file=sys.stderr)
        status = 2
    sys.exit(status)


if __name__ == '__main__':
    main()
