"""``python tools/convert_dncnn.py <in.pth> <out.pth> [--overwrite]``: cszn/DnCNN's pickled whole-module ``model.pth``
-> ``{'params': state_dict}`` for :class:`qdr_plugin.archs.DnCNN` (``path.pretrain_network_g``), loaded with a
restricted unpickler that refuses every global a DnCNN checkpoint does not need (nothing in the file runs).

An existing ``out.pth`` is refused unless ``--overwrite``; it is written atomically. A file that is not the published
checkpoint (missing, truncated, another pickle, a refused global) is reported in one line on stderr, exit status 1.
"""

import argparse
import sys
from pathlib import Path

import torch

from qdr_plugin.errors import UserError
from qdr_plugin.utils.atomic import atomic_torch_save
from qdr_plugin.utils.dncnn_convert import load_dncnn_module_state
from qdr_plugin.utils.output_paths import check_output_file


def _load(src: Path) -> dict[str, torch.Tensor]:
    """The DnCNN state dict of ``src``; a one-line :class:`UserError` when it is not the published checkpoint."""
    if not src.is_file():
        raise UserError(f'{src} does not exist (or is not a file); give the published DnCNN model.pth.')
    try:
        return load_dncnn_module_state(src)
    except Exception as error:  # noqa: BLE001  (random bytes make the unpickler raise about anything)
        detail = ' '.join(str(error).split())[:200] or type(error).__name__
        raise UserError(f'cannot convert {src}: {detail}') from error


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', type=Path, help='the pickled DnCNN module (torch.save(model))')
    parser.add_argument('dst', type=Path, help="where to write {'params': state_dict}")
    parser.add_argument('--overwrite', action='store_true', help='replace dst if it exists')
    args = parser.parse_args(argv)
    try:
        check_output_file(args.dst, 'dst', args.overwrite, {'src': args.src}, 'dncnn.pth')
        state = _load(args.src)
    except UserError as error:
        sys.exit(f'convert_dncnn: {error}')
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({'params': state}, args.dst)
    convs = sum(k.endswith('.weight') and v.dim() == 4 for k, v in state.items())
    print(f"convert_dncnn: wrote {args.dst} ({{'params': {len(state)} tensors}}, {convs} convolutions, "
          f'{sum(v.numel() for v in state.values() if v.is_floating_point()):,} values) from {args.src}.')


if __name__ == '__main__':
    main()
