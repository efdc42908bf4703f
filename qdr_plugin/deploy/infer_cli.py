"""``basicsr infer``: restore a folder of images with a checkpoint (PyTorch; a QDR checkpoint runs fake-quantized)
or an exported ONNX model (ONNX Runtime, CPU), whole images or in tiles; outputs are 8-bit PNGs."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from .infer import list_images, onnx_restorer, restore_folder, torch_restorer
from .options import input_channels, read_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr infer', description=__doc__)
    parser.add_argument('-opt', required=True, help='the options YAML the model was trained with (network_g, scale)')
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument('--ckpt', help="a basicsr checkpoint ({'params': ...}) run with PyTorch")
    model.add_argument('--onnx', help='an ONNX model (basicsr export) run with ONNX Runtime on the CPU')
    parser.add_argument('-i', '--input', required=True, help='folder of PNG / JPEG / TIFF / BMP images (not recursive)')
    parser.add_argument('-o', '--output', required=True, help='folder for the restored <name>.png files')
    parser.add_argument('--tile', type=int, default=None, help='restore in tiles of this many pixels (saves memory)')
    parser.add_argument('--tile-pad', type=int, default=16, help='context pixels around each tile (default 16)')
    parser.add_argument('--threads', type=int, default=None, help='CPU threads (PyTorch / ONNX Runtime intra-op)')
    return parser


def _onnx_input_channels(path: str) -> int | None:
    """The channel dimension the ONNX model's input declares, ``None`` if it is dynamic or unreadable."""
    import onnx

    try:
        dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    except Exception:  # noqa: BLE001  (ONNX Runtime gives the real error when it loads the file)
        return None
    return dims[1].dim_value if len(dims) == 4 and dims[1].HasField('dim_value') else None


def _checkpoint_restorer(opt: dict, opt_path: str, ckpt: str):
    from qdr_plugin.utils.checkpoint import load_networks

    if not Path(ckpt).is_file():
        raise FileNotFoundError(f'checkpoint {ckpt} does not exist.')
    try:
        student, _ = load_networks(opt['network_g'], opt.get('quant'), ckpt)
    except (pickle.UnpicklingError, EOFError, KeyError, RuntimeError) as error:
        detail = ' '.join(line.strip() for line in str(error).splitlines() if line.strip())
        detail = detail if len(detail) <= 200 else detail[:197] + '...'
        raise ValueError(
            f'cannot load {ckpt} as network_g of {opt_path} ({type(error).__name__}: {detail}); give a basicsr '
            'checkpoint and the options file it was trained with.'
        ) from error
    return torch_restorer(student)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.tile is not None and args.tile <= 0:
            raise ValueError(f'--tile must be a positive number of pixels, got {args.tile}.')
        if args.tile_pad < 0:
            raise ValueError(f'--tile-pad must be >= 0, got {args.tile_pad}.')
        if args.threads is not None and args.threads <= 0:
            raise ValueError(f'--threads must be positive, got {args.threads}.')
        opt = read_options(args.opt)
        channels = input_channels(opt)
        scale = int(opt.get('scale', 1))
        files = list_images(args.input)  # fail before loading the model
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)
        if args.ckpt is not None:
            restore = _checkpoint_restorer(opt, args.opt, args.ckpt)
        else:
            if not Path(args.onnx).is_file():
                raise FileNotFoundError(f'ONNX model {args.onnx} does not exist.')
            declared = _onnx_input_channels(args.onnx)
            if declared is not None and declared != channels:
                raise ValueError(
                    f'{args.onnx} takes {declared}-channel input but {args.opt} says in_ch {channels}; '
                    'give the options file the model was exported from.'
                )
            restore = onnx_restorer(args.onnx, args.threads)
        written, failed = restore_folder(restore, args.input, args.output, channels, args.tile, args.tile_pad, scale)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f'basicsr infer: {error}')
    print(f'restored {len(written)} images to {args.output} ({len(failed)} skipped)')
    if not written:
        sys.exit(
            f'basicsr infer: none of the {len(files)} images in {args.input} could be read (see the "skipped" '
            'lines above); give a folder of valid PNG / JPEG / TIFF / BMP images.'
        )
