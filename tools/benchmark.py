"""Thin wrapper: ``python tools/benchmark.py --model NAME=PATH ...`` = ``basicsr bench``."""

import sys

from qdr_plugin.cli import main

if __name__ == '__main__':
    main(['bench', *sys.argv[1:]])
