"""``python tools/convert_dncnn.py <in.pth> <out.pth>``: cszn/DnCNN's pickled whole-module ``model.pth`` ->
``{'params': state_dict}`` for :class:`qdr_plugin.archs.DnCNN` (``path.pretrain_network_g``), loaded with a
restricted unpickler that refuses every global a DnCNN checkpoint does not need (nothing in the file runs)."""

import argparse
from pathlib import Path

import torch

from qdr_plugin.utils.dncnn_convert import load_dncnn_module_state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', type=Path, help='the pickled DnCNN module (torch.save(model))')
    parser.add_argument('dst', type=Path, help="where to write {'params': state_dict}")
    args = parser.parse_args(argv)
    state = load_dncnn_module_state(args.src)
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'params': state}, args.dst)
    convs = sum(k.endswith('.weight') and v.dim() == 4 for k, v in state.items())
    print(f"convert_dncnn: wrote {args.dst} ({{'params': {len(state)} tensors}}, {convs} convolutions, "
          f'{sum(v.numel() for v in state.values() if v.is_floating_point()):,} values) from {args.src}.')


if __name__ == '__main__':
    main()
