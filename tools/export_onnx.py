"""Thin wrapper: ``python tools/export_onnx.py -opt X.yml --ckpt model.pth --out model.onnx`` = ``basicsr export``."""

import sys

from qdr_plugin.cli import main

if __name__ == '__main__':
    main(['export', *sys.argv[1:]])
