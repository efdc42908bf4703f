"""``python -m qdr_plugin.mm train | test | convert``: QDR from an mmengine config.

    python -m qdr_plugin.mm train CONFIG [--resume [CHECKPOINT]] [--work-dir DIR] [--cfg-options KEY=VALUE ...]
                                         [--launcher none|pytorch]
    python -m qdr_plugin.mm test CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options ...] [--launcher ...]
    python -m qdr_plugin.mm convert MMENGINE_CHECKPOINT PLUGIN_CHECKPOINT

The config is checked before anything is built (:func:`qdr_plugin.mm.config_check.check_config`); a mistake, like
any :class:`~qdr_plugin.errors.UserError`, ends the run with one line ``qdr_plugin.mm <command>: <message>`` and
exit status 2. The work directory defaults to ``work_dirs/<config name>``. ``--launcher pytorch`` (under
``torchrun``) starts the process group with :func:`qdr_plugin.dist.init_dist` (gloo without CUDA) before mmengine
would (its own needs CUDA).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qdr_plugin.cli import user_message
from qdr_plugin.errors import UserError

__all__ = ['build_config', 'build_runner', 'main']


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m qdr_plugin.mm', description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    for name in ('train', 'test'):
        cmd = sub.add_parser(name, help=f'{name} with an mmengine config')
        cmd.add_argument('config', help='the Python config (configs/*.py)')
        if name == 'test':
            cmd.add_argument('checkpoint', help='an mmengine checkpoint of the train command')
        else:
            cmd.add_argument('--resume', nargs='?', const='auto', default=None,
                             help='resume from CHECKPOINT, or (no value) the latest one in the work directory')
        cmd.add_argument('--work-dir', help='where logs and checkpoints go (default work_dirs/<config name>)')
        cmd.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                         help='override config keys, e.g. train_cfg.max_iters=100')
        cmd.add_argument('--launcher', choices=('none', 'pytorch'), default='none')
    convert = sub.add_parser('convert', help='an mmengine checkpoint as a plugin checkpoint + options YAML')
    convert.add_argument('src')
    convert.add_argument('dst')
    return parser


def build_config(config: str, work_dir: str | None = None, cfg_options: list[str] | None = None,
                 launcher: str = 'none', resume: str | None = None, checkpoint: str | None = None):
    """The :class:`mmengine.Config` of a command: ``config`` with the overrides applied."""
    from mmengine.config import Config, DictAction

    if not Path(config).is_file():
        raise UserError(f'{config}: config file not found; give the path of a Python config (e.g. '
                        'configs/qdr_efm_denoise_demo.py).')
    cfg = Config.fromfile(config)
    if cfg_options:
        parser = argparse.ArgumentParser()
        parser.add_argument('--cfg-options', nargs='+', action=DictAction)
        cfg.merge_from_dict(parser.parse_args(['--cfg-options', *cfg_options]).cfg_options)
    cfg.work_dir = work_dir or cfg.get('work_dir') or str(Path('work_dirs') / Path(config).stem)
    cfg.launcher = launcher
    if resume is not None:
        cfg.resume = True
        cfg.load_from = None if resume == 'auto' else resume
    if checkpoint is not None:
        cfg.load_from = checkpoint
    return cfg


def build_runner(command: str, config: str, work_dir: str | None = None, cfg_options: list[str] | None = None,
                 launcher: str = 'none', resume: str | None = None, checkpoint: str | None = None):
    """The checked config's mmengine ``Runner`` for ``command`` (``'train'`` / ``'test'``), the process group
    started first under ``--launcher pytorch``."""
    from mmengine.runner import Runner

    import qdr_plugin.mm  # noqa: F401  (registration)

    from .config_check import check_config

    cfg = build_config(config, work_dir, cfg_options, launcher, resume, checkpoint)
    check_config(cfg, command == 'train', Path.cwd())
    if launcher == 'pytorch':
        from qdr_plugin.core.distributed import is_dist
        from qdr_plugin.dist import init_dist

        if not is_dist():
            init_dist('pytorch')
    return Runner.from_cfg(cfg)


def _run(args: argparse.Namespace) -> None:
    if args.command == 'convert':
        from .convert import convert_checkpoint

        for path in convert_checkpoint(args.src, args.dst):
            print(f'wrote {path}')
        return
    runner = build_runner(args.command, args.config, args.work_dir, args.cfg_options, args.launcher,
                          getattr(args, 'resume', None), getattr(args, 'checkpoint', None))
    runner.train() if args.command == 'train' else runner.test()


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m qdr_plugin.mm`` and ``tools/train.py`` / ``tools/test.py``."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        _run(args)
    except UserError as error:
        sys.stdout.flush()
        print(f'qdr_plugin.mm {args.command}: {user_message(error)}', file=sys.stderr, flush=True)
        sys.exit(2)
