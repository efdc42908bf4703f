"""The ``basicsr`` command (basicsr 1.4.2 ships none).

    basicsr train -opt options/qdr_denoise.yml [--auto_resume] [--debug] [--force_yml a:b=v] [--launcher pytorch]
    basicsr test  -opt options/test.yml

Every flag after the sub-command goes to basicsr's own ``parse_options`` unchanged. The plugin is registered
first, and ``root_path`` is the current directory (``experiments/``, ``results/`` and ``tb_logger/`` land there).
"""

from __future__ import annotations

import argparse
import os
import sys

COMMANDS = {
    'train': 'train a network with basicsr\'s training loop (plugin archs, models and datasets registered)',
    'test': 'evaluate a trained network with basicsr\'s test loop',
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='basicsr',
        description='BasicSR with the qdr-plugin registered (QDR quantization-aware training).',
        epilog='Flags after the sub-command are basicsr\'s own: -opt X.yml, --auto_resume, --debug, '
        '--force_yml key:sub=value, --launcher {none,pytorch,slurm}. Run "basicsr train -h" for them.',
    )
    sub = parser.add_subparsers(dest='command', metavar='{' + ','.join(COMMANDS) + '}')
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


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

    root_path = os.getcwd()
    sys.argv = [f'basicsr {command}', *rest]
    if command == 'train':
        from basicsr.train import train_pipeline

        train_pipeline(root_path)
    else:
        from basicsr.test import test_pipeline

        test_pipeline(root_path)
