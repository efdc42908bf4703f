"""A trained QDR checkpoint, exported and run by ONNX Runtime on a validation set: PSNR / SSIM of the FP32 and INT8
files against the ground truth, and parity of each INT8 file with the PyTorch fake-quant network (max difference
in output quantization steps, PSNR between the two), all on the same noisy inputs (docs/evaluation.md).

    python benchmarks/onnx_eval.py -opt options/qdr_denoise_bsd68.yml \\
        --ckpt experiments/qdr_denoise_bsd68/models/net_g_latest.pth --name bsd68_onnx

``--max-images N`` scores only the first N images of the set (the table's dataset says so).
"""

from __future__ import annotations

# isort: off
import qdr_plugin  # noqa: F401  (first: registers the plugin and lets basicsr 1.4.2 import)
# isort: on

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from basicsr.data import build_dataset
from torch.utils.data import Subset

from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.deploy import ExportError, export_onnx, onnxruntime_kernel_counts
from qdr_plugin.deploy.options import input_channels, read_options
from qdr_plugin.quant.fake_quant import FakeQuantizer
from qdr_plugin.utils.checkpoint import load_networks
from qdr_plugin.utils.evaluation import evaluate

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
COLUMNS = [('file', 'file', ''), ('dataset', 'dataset', ''), ('sigma', 'sigma', 'g'), ('psnr', 'psnr', '.3f'),
           ('ssim', 'ssim', '.4f'), ('parity_max_steps', 'parity_max_steps', '.2f'),
           ('parity_psnr_db', 'parity_psnr_db', '.1f'), ('ort_int8_convs', 'ort_int8_convs', '')]

def _output_step(net: torch.nn.Module) -> float:
    """The step of the quantizers that make the output (EFM: its global residual, DnCNN: its subtraction), else
    one 8-bit level."""
    residual = getattr(net, 'residual', None) or getattr(net, 'sub', None)
    steps = [float(q.step) for q in (getattr(residual, 'quant_a', None), getattr(residual, 'quant_b', None))
             if isinstance(q, FakeQuantizer)]
    return max(steps) if steps else 1 / 255


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', required=True)
    parser.add_argument('--ckpt', required=True)
    parser.add_argument('--name', default='onnx_eval')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--max-images', type=int, help='only the first N images of the set (parity of slow networks)')
    args = parser.parse_args()

    opt = read_options(args.opt)
    val_opt = next(v for k, v in opt['datasets'].items() if k.startswith('val'))
    dataset = build_dataset(val_opt)
    if args.max_images:
        dataset = Subset(dataset, range(min(args.max_images, len(dataset))))
    student, teacher = load_networks(opt['network_g'], opt.get('quant'), args.ckpt)
    channels = input_channels(opt)
    step = _output_step(student)
    references: list[np.ndarray] = []  # the fake-quant student's outputs, computed once

    def student_restore(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = student(x)
        references.append(out.numpy())
        return out

    fake = evaluate(student_restore, dataset, desc='fake-quant')
    dataset_name = val_opt['name'] + (f' (first {len(dataset)})' if args.max_images else '')
    rows = [{'file': 'INT8 fake-quant (PyTorch)', 'dataset': dataset_name, 'sigma': val_opt.get('sigma'),
             'psnr': round(fake['psnr'], 3), 'ssim': round(fake['ssim'], 4)}]
    with tempfile.TemporaryDirectory() as tmp:
        files = {'FP32 (teacher)': export_onnx(teacher, Path(tmp) / 'fp32.onnx', channels, fp32=True)}
        for target in ('onnxruntime', 'tensorrt'):
            try:
                files[f'INT8 {target} file'] = export_onnx(student, Path(tmp) / f'{target}.onnx', channels, target)
            except ExportError as error:  # e.g. a quant.unsigned_relu network has no TensorRT form
                print(f'INT8 {target} file: not exported ({error})')
        for label, path in files.items():
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
            parity = {'max_steps': 0.0, 'sq_err': 0.0, 'count': 0, 'index': 0}

            def restore(x: torch.Tensor, session=session, parity=parity) -> torch.Tensor:
                out = session.run(None, {'input': x.numpy()})[0]
                ref = references[parity['index']]
                parity['index'] += 1
                parity['max_steps'] = max(parity['max_steps'], float(np.abs(out - ref).max()) / step)
                parity['sq_err'] += float(((out.astype(np.float64) - ref) ** 2).sum())
                parity['count'] += out.size
                return torch.from_numpy(out)

            scores = evaluate(restore, dataset, desc=label)
            row = {'file': label, 'dataset': dataset_name, 'sigma': val_opt.get('sigma'),
                   'psnr': round(scores['psnr'], 3), 'ssim': round(scores['ssim'], 4)}
            if label.startswith('INT8'):
                row['parity_max_steps'] = round(parity['max_steps'], 2)
                sq_err = parity['sq_err']
                row['parity_psnr_db'] = round(10 * math.log10(parity['count'] / sq_err), 1) if sq_err else math.inf
            if 'onnxruntime' in label:
                row['ort_int8_convs'] = onnxruntime_kernel_counts(path).get('QLinearConv', 0)
            rows.append(row)
            print(markdown_table([row], [c for c in COLUMNS if c[0] in row]))
    print(f'output quantization step: {step:.5f}')
    table = markdown_table(rows, COLUMNS)
    print(table)
    info = run_info(command_line(), args.threads, output_step=step)
    print('wrote', write_results(RESULTS_DIR, args.name, rows, info, table)['json'])


if __name__ == '__main__':
    main()
