"""Check an exported ONNX file: ``python tools/check_onnx_int8.py model.onnx [--target tensorrt]``.

Runs ``onnx.checker``, the I/O contract (``input`` / ``output``, float32 NCHW, dynamic N/H/W), TensorRT's
explicit-quantization rules for ``--target tensorrt``, prints per-op counts, and for ``--target onnxruntime`` how
many convolutions ONNX Runtime runs as integer kernels. Exit status 1 on any problem.
"""

import argparse
import sys

from qdr_plugin.deploy import check_onnx, onnxruntime_kernel_counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('onnx_file')
    parser.add_argument('--target', choices=('onnxruntime', 'tensorrt'), default=None)
    args = parser.parse_args()
    report = check_onnx(args.onnx_file, args.target)
    print(report.summary())
    if args.target == 'onnxruntime':
        kernels = onnxruntime_kernel_counts(args.onnx_file)
        print('  ONNX Runtime optimized graph:', ', '.join(f'{k}: {v}' for k, v in sorted(kernels.items())))
    sys.exit(1 if report.problems else 0)


if __name__ == '__main__':
    main()
