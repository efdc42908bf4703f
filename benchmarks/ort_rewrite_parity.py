"""Which of ONNX Runtime's graph rewrites moves an INT8 file away from its PyTorch fake-quant network: the
``onnxruntime`` export of a QDR checkpoint run on one crop of the options' first val image, once per optimisation
setting, each output compared with the fake-quant network's (PSNR between the two, largest difference in 8-bit
output steps, 1/255).

    python benchmarks/ort_rewrite_parity.py -opt options/hybrid/restormer_derain.yml \
        --ckpt experiments/restormer_derain/models/net_g_latest.pth --name ort_rewrite_parity_restormer_derain

Settings: graph optimisations off, basic, extended, all, and all but ``QDQSelectorActionTransformer`` (the rewrite
of Q/DQ pairs into QLinearConv and the other integer kernels). Writes ``<out>/<name>.{json,csv,md}`` (``--out``
default ``benchmarks/results``).
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

from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.deploy import export_onnx
from qdr_plugin.deploy.options import input_channels, read_options
from qdr_plugin.utils.checkpoint import load_networks

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
LEVELS = {'off': ort.GraphOptimizationLevel.ORT_DISABLE_ALL, 'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          'extended': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, 'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
INTEGER_REWRITE = 'QDQSelectorActionTransformer'
COLUMNS = [('setting', 'ONNX Runtime graph optimisation', ''), ('psnr_db', 'PSNR to fake-quant (dB)', '.1f'),
           ('max_steps', 'largest difference (steps)', '.2f')]


def _session(path: Path, setting: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if setting == f'all but {INTEGER_REWRITE}':
        options.add_session_config_entry('optimization.disable_specified_optimizers', INTEGER_REWRITE)
    else:
        options.graph_optimization_level = LEVELS[setting]
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-opt', required=True)
    parser.add_argument('--ckpt', required=True, help='a QDR checkpoint')
    parser.add_argument('--crop', type=int, default=96, help='side of the top-left crop of the first val image')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--name', default='ort_rewrite_parity')
    parser.add_argument('--out', type=Path, default=RESULTS_DIR, help='folder of the JSON, CSV and table')
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    opt = read_options(args.opt)
    val_opt = next(v for k, v in opt['datasets'].items() if k.startswith('val'))
    x = build_dataset(val_opt)[0]['lq'][None, :, :args.crop, :args.crop].contiguous()
    student, _ = load_networks(opt['network_g'], opt.get('quant'), args.ckpt)
    with torch.no_grad():
        reference = student(x).numpy().astype(np.float64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(student, Path(tmp) / 'int8.onnx', input_channels(opt), 'onnxruntime')
        for setting in (*LEVELS, f'all but {INTEGER_REWRITE}'):
            out = _session(path, setting, args.threads).run(None, {'input': x.numpy()})[0].astype(np.float64)
            mse = float(((out - reference) ** 2).mean())
            rows.append({'setting': setting, 'psnr_db': round(10 * math.log10(1 / mse), 1) if mse else math.inf,
                         'max_steps': round(float(np.abs(out - reference).max()) * 255, 2)})
    table = markdown_table(rows, COLUMNS)
    print(table)
    info = run_info(command_line(), args.threads, crop=args.crop, image=val_opt['name'])
    print('wrote', write_results(args.out, args.name, rows, info, table)['json'])


if __name__ == '__main__':
    main()
