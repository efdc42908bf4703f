"""The ``basicsr`` command (basicsr 1.4.2 ships none).

    basicsr train  -opt options/qdr_denoise.yml [--auto_resume] [--debug] [--force_yml a:b=v] [--launcher pytorch]
    basicsr test   -opt options/test.yml
    basicsr export -opt X.yml --ckpt model.pth --out model.onnx [--target onnxruntime|tensorrt] [--fp32]
    basicsr ptq    -opt X.yml --ckpt fp32.pth --out ptq.onnx --calib {minmax,percentile,entropy}
    basicsr infer  -opt X.yml (--ckpt model.pth | --onnx model.onnx) -i in_dir -o out_dir [--tile 256]
    basicsr bench  [-opt X.yml] --model NAME=PATH [--model ...] [--task T] [--datasets ...] [--sensitivity] [--detect]
    basicsr hybrid {distill,search} -opt X.yml [--latency]

``train`` and ``test`` hand every flag after the sub-command to basicsr's own ``parse_options`` unchanged, with the
plugin registered first and ``root_path`` = the current directory (``experiments/``, ``results/`` and
``tb_logger/`` land there). The other sub-commands are the plugin's own (``basicsr <command> -h``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import multiprocessing
import os
import sys
from typing import NoReturn

from qdr_plugin.errors import UserError

COMMANDS = {
    'train': ('train a network with basicsr\'s training loop (plugin archs, models and datasets registered)', None),
    'test': ('evaluate a trained network with basicsr\'s test loop', None),
    'export': ('export a checkpoint to ONNX (INT8 Q/DQ for ONNX Runtime or TensorRT, or FP32)',
               'qdr_plugin.deploy.export_cli:main'),
    'ptq': ('post-training quantization baseline with ONNX Runtime quantize_static',
            'qdr_plugin.deploy.ptq_cli:main'),
    'infer': ('restore a folder of images with a checkpoint or an ONNX model', 'qdr_plugin.deploy.infer_cli:main'),
    'bench': ('benchmark FP32 / INT8 models on the standard sets (PSNR, SSIM, retention, speed, sensitivity, '
              'downstream detection)',
              'qdr_plugin.bench.bench_cli:main'),
    'hybrid': ('distil state-space surrogates of a Restormer\'s blocks, then search the hybrid '
               '(distill / search)', 'qdr_plugin.hybrid.cli:main'),
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
    """Check the options file as basicsr will read it (its ``--force_yml`` entries applied) before basicsr reads
    data or builds a network; a mistake raises an ``OptionsError`` (a :class:`UserError`) naming the key."""
    from qdr_plugin.options_check import check_options_file

    peek = argparse.ArgumentParser(prog=f'basicsr {command}', add_help=False)
    peek.add_argument('-opt')
    peek.add_argument('--force_yml', nargs='+')
    known, _ = peek.parse_known_args(rest)
    if known.opt is None or '-h' in rest or '--help' in rest:
        return  # basicsr's own parser reports the missing -opt / prints its help
    check_options_file(known.opt, is_train=command == 'train', force_yml=known.force_yml)


def _run(command: str, rest: list[str]) -> None:
    """Run ``command`` with its arguments ``rest``: a plugin sub-command, or basicsr's train / test pipeline."""
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


def _loggers() -> list[logging.Logger]:
    """The root logger and every named logger created so far (basicsr's among them)."""
    named = [logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)]
    return [logging.getLogger(), *named]


def user_message(error: UserError) -> str:
    """The one line a :class:`UserError` states. A UserError raised in a DataLoader worker reaches the main process
    with the worker's traceback in its message (``Caught UserError in DataLoader worker ...``): its last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith('Caught '):
        return lines[-1].split(f'{type(error).__name__}: ', 1)[-1]
    return ' '.join(lines) or type(error).__name__


def _flush_logs(line: str, into_log_files: bool) -> None:
    """Flush every logging handler, so that the log lines printed so far come before ``line``; with
    ``into_log_files``, also append ``line`` to the log files still open (basicsr's ``train_*.log``)."""
    record = logging.makeLogRecord({'msg': line, 'levelno': logging.ERROR, 'levelname': 'ERROR'})
    for logger in _loggers():
        for handler in logger.handlers:
            stream = getattr(handler, 'stream', None)
            if stream is None or getattr(stream, 'closed', False):
                continue
            with contextlib.suppress(ValueError, OSError):
                if into_log_files and isinstance(handler, logging.FileHandler):
                    handler.emit(record)
                handler.flush()


def _end_worker_processes() -> None:
    """End the command's child processes (DataLoader workers still loading the next batches), so that nothing they
    print comes after the last line."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout=5)


def _stop(command: str, error: UserError) -> NoReturn:
    """Print ``basicsr <command>: <message>`` as the last line on stderr, after every log line (and into the run's
    log file for ``train`` / ``test``), and exit with status 2."""
    line = f'basicsr {command}: {user_message(error)}'
    _end_worker_processes()
    _flush_logs(line, into_log_files=COMMANDS[command][1] is None)
    with contextlib.suppress(ValueError, OSError):
        sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``basicsr`` console script and of ``python -m qdr_plugin``.

    A :class:`~qdr_plugin.errors.UserError` from any command ends the run with its one line, ``basicsr <command>:
    <message>``, printed last on stderr without a traceback, and exit status 2; any other exception keeps its
    traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0] in ('-h', '--help'):
        parser.print_help()
        sys.exit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        parser.error(f"unknown command '{command}' (choose from {', '.join(COMMANDS)})")

    import qdr_plugin  # noqa: F401  (registers the plugin before basicsr builds anything)

    try:
        _run(command, rest)
    except UserError as error:
        _stop(command, error)
