"""The ``basicsr`` command (basicsr 1.4.2 ships none).

    basicsr train  -opt options/qdr_denoise.yml [--auto_resume] [--debug] [--force_yml a:b=v] [--launcher pytorch]
    basicsr test   -opt options/test.yml
    basicsr export -opt X.yml --ckpt model.pth --out model.onnx [--target onnxruntime|tensorrt] [--fp32]
    basicsr ptq    -opt X.yml --ckpt fp32.pth --out ptq.onnx --calib {minmax,percentile,entropy}
    basicsr infer  -opt X.yml (--ckpt model.pth | --onnx model.onnx) -i in_dir -o out_dir [--tile 256]
    basicsr bench  [-opt X.yml] --model NAME=PATH [--model ...] [--task denoise|sr] [--datasets ...] [--sensitivity]

``train`` and ``test`` hand every flag after the sub-command to basicsr's own ``parse_options`` unchanged, with the
plugin registered first and ``root_path`` = the current directory (``experiments/``, ``results/`` and
``tb_logger/`` land there). The other sub-commands are the plugin's own (``basicsr <command> -h``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    'train': ('train a network with basicsr\'s training loop (plugin archs, models and datasets registered)', None),
    'test': ('evaluate a trained network with basicsr\'s test loop', None),
    'export': ('export a checkpoint to ONNX (INT8 Q/DQ for ONNX Runtime or TensorRT, or FP32)',
               'qdr_plugin.deploy.export_cli:main'),
    'ptq': ('post-training quantization baseline with ONNX Runtime quantize_static',
            'qdr_plugin.deploy.ptq_cli:main'),
    'infer': ('restore a folder of images with a checkpoint or an ONNX model', 'qdr_plugin.deploy.infer_cli:main'),
    'bench': ('benchmark FP32 / INT8 models on the standard sets (PSNR, SSIM, retention, speed, sensitivity)',
              'qdr_plugin.bench.bench_cli:main'),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='basicsr',
        description='BasicSR with the qdr-plugin registered (QDR quantization-aware training and INT8 deployment).',
        epilog='train / test take basicsr\'s own flags: -opt X.yml, --auto_resume, --debug, '
        '--force_yml key:sub=value, --launcher {none,pytorch,slurm}. "basicsr <command> -h" shows each command\'s.',
    )
    sub = parser.add_subparsers(dest='command', metavar='{' + ','.join(COMMANDS) + '}')
    for name, (help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _check_options(command: str, rest: list[str]) -> None:
    """Validate the options file before basicsr reads data or builds a network (one clear line on error)."""
    from qdr_plugin.options_check import OptionsError, check_options_file

    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument('-opt')
    known, _ = peek.parse_known_args(rest)
    if known.opt is None or '-h' in rest or '--help' in rest:
        return  # basicsr's own parser reports the missing -opt / prints its help
    try:
        check_options_file(known.opt, is_train=command == 'train')
    except OptionsError as error:
        sys.exit(f'basicsr {command}: {error}')


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``basicsr`` console script and of ``python -m qdr_plugin``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0] in ('-h', '--help'):
        parser.print_help()
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.error(f"unknown command '{command}' (choose from {', '.join(COMMANDS)})")

    import qdr_plugin  # noqa: F401  (registers the plugin before basicsr builds anything)

    target = COMMANDS[command][1]
    if target is not None:
        module, function = target.split(':')
        getattr(importlib.import_module(module), function)(rest)
        return
    _check_options(command, rest)
    root_path = os.getcwd()
    sys.argv = [f'basicsr {command}', *rest]
    if command == 'train':
        from qdr_plugin.train import train_pipeline

        train_pipeline(root_path)
    else:
        from basicsr.test import test_pipeline

        test_pipeline(root_path)
