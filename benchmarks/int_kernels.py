"""Which convolutions and element-wise ops ONNX Runtime runs as integer kernels, per arch (structure, no timing).

Each arch is built small, prepared with the plugin (:func:`qdr_plugin.prepare`, calibrated on a few random
images), exported INT8 for ``--target onnxruntime`` and counted in ONNX Runtime's optimized graph
(:func:`qdr_plugin.deploy.kernel_report.kernel_report`); the same network exported for ``--target tensorrt`` is
run through the TensorRT rule checker; ONNX Runtime's own PTQ of the FP32 export (MinMax, calibrated on the same
random images) is counted beside it. Writes ``<out>.json`` and ``<out>.md`` and prints the table. With ``--keep
DIR`` it leaves, per arch, the files to time against each other on an idle machine: ``<arch>_fp32.onnx``,
``<arch>_int8.onnx`` (the plugin's export for ONNX Runtime) and ``<arch>_ptq.onnx``, e.g. with
``benchmarks/speed_ratio.py``.

    OMP_NUM_THREADS=1 python benchmarks/int_kernels.py --out benchmarks/results/int_kernels_after
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from qdr_plugin.deploy import check_onnx, export_onnx
from qdr_plugin.deploy.kernel_report import kernel_report
from qdr_plugin.deploy.ptq import quantize_onnx_ptq
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import QuantConfig
from qdr_plugin.utils.checkpoint import build_network

ARCHS: dict[str, dict[str, Any]] = {
    'EDSR-small x4': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 4,
                      'upscale': 4},
    'SRVGGNetCompact x4': {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64,
                           'num_conv': 8, 'upscale': 4, 'act_type': 'prelu'},
    'RCAN-small x4': {'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_group': 2,
                      'num_block': 2, 'squeeze_factor': 16, 'upscale': 4},
    'MSRResNet x4': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 4,
                     'upscale': 4},
    'RRDBNet-small x4': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 4, 'num_feat': 32,
                         'num_block': 2, 'num_grow_ch': 16},
    'EFM w32 gray': {'type': 'EFM', 'in_ch': 1, 'width': 32, 'depth': 2, 'stem': 'unshuffle', 'up': 'deconv'},
    'EFM w32 colour': {'type': 'EFM', 'in_ch': 3, 'width': 32, 'depth': 2, 'stem': 'unshuffle', 'up': 'deconv'},
    'DnCNN': {'type': 'DnCNN', 'in_ch': 1, 'depth': 17, 'width': 64},
}
"""The archs, small: block counts cut, widths as shipped (the structure per block is what is counted)."""

EFM_LAYOUTS: dict[str, dict[str, Any]] = {
    'EFM w32 gray noLDG': {**ARCHS['EFM w32 gray'], 'ldg': False},
    'EFM w32 gray shuffle': {**ARCHS['EFM w32 gray'], 'up': 'shuffle'},
    'EFM w32 gray noLDG shuffle': {**ARCHS['EFM w32 gray'], 'ldg': False, 'up': 'shuffle'},
}
"""Other layouts of the width-32 EFM (no LDG gates, pixel-shuffle up-sampling), counted and kept only when named in
``--archs``."""


def _channels(network_opt: dict[str, Any]) -> int:
    return int(network_opt.get('num_in_ch') or network_opt.get('in_ch'))


def measure(
    name: str, network_opt: dict[str, Any], quant: dict[str, Any], workdir: Path, keep: Path | None = None
) -> dict[str, Any]:
    """Build, prepare (calibrated on two random 32 x 32 batches), export for both targets and count one arch; with
    ``keep``, also write its FP32 export, its INT8 export and ONNX Runtime's PTQ of it there."""
    torch.manual_seed(0)
    net = build_network(dict(network_opt))
    channels = _channels(network_opt)
    batches = [torch.rand(2, channels, 32, 32) for _ in range(2)]
    prepared = prepare(net, network_opt, QuantConfig.from_options(quant), batches).network.eval()
    stem = (keep or workdir) / name.replace(' ', '_').replace('-', '_')
    ort_path = export_onnx(prepared, Path(f'{stem}_int8.onnx'), channels, 'onnxruntime')
    trt_path = export_onnx(prepared, workdir / f'{stem.name}_trt.onnx', channels, 'tensorrt')
    fp32_path = export_onnx(prepared, Path(f'{stem}_fp32.onnx'), channels, fp32=True)
    ptq_path = quantize_onnx_ptq(fp32_path, Path(f'{stem}_ptq.onnx'), [b[:1].numpy() for b in batches])
    trt = check_onnx(trt_path, 'tensorrt', prepared)
    report, ptq = kernel_report(ort_path), kernel_report(ptq_path)
    return {'arch': name, **report.as_dict(), 'ptq_integer_convs': ptq.integer_convs,
            'ptq_integer_ops': dict(ptq.integer_ops),
            'tensorrt': 'OK' if not trt.problems else '; '.join(trt.problems)}


def _ops(counts: dict[str, int]) -> str:
    return ', '.join(f'{op} {n}' for op, n in sorted(counts.items())) or '-'


def markdown(rows: list[dict[str, Any]], quant: dict[str, Any]) -> str:
    """The rows as a Markdown table, with the float convolutions' names below it."""
    lines = [f'quant: {json.dumps(quant)}', '',
             '| arch | convs | integer convs | float convs | integer ops | float element-wise ops | Q / DQ left '
             '| TensorRT checker | ORT PTQ: integer convs | ORT PTQ: integer ops |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        lines.append(f"| {row['arch']} | {row['convs']} | {row['integer_convs']} | {row['float_convs']} | "
                     f"{_ops(row['integer_ops'])} | {_ops(row['float_ops'])} | {_ops(row['qdq'])} | "
                     f"{row['tensorrt']} | {row['ptq_integer_convs']} | {_ops(row['ptq_integer_ops'])} |")
    lines.append('')
    for row in rows:
        if row['float_conv_nodes']:
            lines.append(f"- {row['arch']}: float convolutions {', '.join(row['float_conv_nodes'])}")
    return '\n'.join(lines) + '\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', required=True, help='output path without suffix (.json and .md are written)')
    parser.add_argument('--archs', nargs='*', default=list(ARCHS), choices=[*ARCHS, *EFM_LAYOUTS],
                        help='the arch names to count (default: every one of ARCHS; EFM_LAYOUTS only when named)')
    parser.add_argument('--unsigned-relu', action='store_true', help='quant.unsigned_relu: true')
    parser.add_argument('--no-integer-points', action='store_true',
                        help='quant.integer_points: false (the quantization points without the integer-kernel ones)')
    parser.add_argument('--keep', type=Path, help='a folder to leave the FP32, INT8 and ORT-PTQ files of every arch in')
    args = parser.parse_args()
    quant = {'bits': 8, 'unsigned_relu': args.unsigned_relu}
    if args.no_integer_points:
        quant['integer_points'] = False
    rows = []
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.archs:
            rows.append(measure(name, {**ARCHS, **EFM_LAYOUTS}[name], quant, Path(tmp), args.keep))
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.json').write_text(json.dumps({'quant': quant, 'rows': rows}, indent=1) + '\n')
    table = markdown(rows, quant)
    out.with_suffix('.md').write_text(table)
    print(table)


if __name__ == '__main__':
    main()
