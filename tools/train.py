"""``python tools/train.py CONFIG ...``: the mmengine front's ``train`` command as MMagic users type it
(:mod:`qdr_plugin.mm.cli`); ``torchrun --nproc_per_node=N tools/train.py CONFIG --launcher pytorch`` for DDP."""

import sys

from qdr_plugin.mm.cli import main

if __name__ == '__main__':
    main(['train', *sys.argv[1:]])
