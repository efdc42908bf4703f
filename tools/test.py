"""``python tools/test.py CONFIG ...``: the mmengine front's ``test`` command as MMagic users type it
(:mod:`qdr_plugin.mm.cli`); ``torchrun --nproc_per_node=N tools/test.py CONFIG --launcher pytorch`` for DDP."""

import sys

from qdr_plugin.mm.cli import main

if __name__ == '__main__':
    main(['test', *sys.argv[1:]])
