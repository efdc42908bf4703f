"""``basicsr infer``: restore a folder of images with a checkpoint (PyTorch; a QDR checkpoint runs fake-quantized)
or an exported ONNX model (ONNX Runtime, CPU), whole images or in tiles; outputs are 8-bit PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path

from qdr_plugin.errors import UserError
from qdr_plugin.utils.checkpoint import load_networks
from qdr_plugin.utils.output_paths import check_output_folder

from .infer import (
    Restorer,
    list_images,
    onnx_restorer,
    output_name,
    refuse_input_folder,
    restore_folder,
    torch_restorer,
)
from .options import input_channels, read_options


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr infer', description=__doc__)
    parser.add_argument('-opt', required=True, help='the options YAML the model was trained with (network_g, scale)')
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument('--ckpt', help="a basicsr checkpoint ({'params': ...}) run with PyTorch")
    model.add_argument('--onnx', help='an ONNX model (basicsr export) run with ONNX Runtime on the CPU')
    parser.add_argument('-i', '--input', required=True, help='folder of PNG / JPEG / TIFF / BMP images (not recursive)')
    parser.add_argument('-o', '--output', required=True,
                        help='folder for the restored <name>.png files (existing ones are refused, see --overwrite)')
    parser.add_argument('--overwrite', action='store_true', help='replace restored images already in the folder')
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


def _check_numbers(args: argparse.Namespace) -> None:
    if args.tile is not None and args.tile <= 0:
        raise UserError(f'--tile must be a positive number of pixels, got {args.tile}.')
    if args.tile_pad < 0:
        raise UserError(f'--tile-pad must be >= 0, got {args.tile_pad}.')
    if args.threads is not None and args.threads <= 0:
        raise UserError(f'--threads must be positive, got {args.threads}.')


def _onnx_model(args: argparse.Namespace, channels: int) -> Restorer:
    """The ONNX Runtime restorer of ``--onnx``, refused when its input channels are not the options'."""
    if not Path(args.onnx).is_file():
        raise UserError(f'ONNX model {args.onnx} does not exist; give the file basicsr export wrote with --onnx.')
    declared = _onnx_input_channels(args.onnx)
    if declared is not None and declared != channels:
        raise UserError(
            f'{args.onnx} takes {declared}-channel input but {args.opt} says in_ch {channels}; '
            'give the options file the model was exported from.'
        )
    return onnx_restorer(args.onnx, args.threads)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``basicsr infer``; a problem the user can fix raises :class:`~qdr_plugin.errors.UserError`
    (the ``basicsr`` command prints it as one line)."""
    args = _parser().parse_args(argv)
    _check_numbers(args)
    opt = read_options(args.opt)
    channels = input_channels(opt)
    scale = int(opt.get('scale', 1))
    try:
        files = list_images(args.input)  # fail before loading the model
    except FileNotFoundError as error:
        raise UserError(str(error)) from error
    refuse_input_folder(args.input, args.output)
    check_output_folder(args.output, '-o', [output_name(f) for f in files], args.overwrite)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.ckpt is not None:
        restore = torch_restorer(load_networks(opt['network_g'], opt.get('quant'), args.ckpt, '--ckpt')[0])
    else:
        try:
            restore = _onnx_model(args, channels)
        except ValueError as error:  # ONNX Runtime cannot load the file
            raise UserError(str(error)) from error
    try:
        written, failed = restore_folder(restore, args.input, args.output, channels, args.tile, args.tile_pad, scale)
    except UserError:
        raise
    except ValueError as error:  # the network's output does not have the options' scale
        raise UserError(str(error)) from error
    print(f'restored {len(written)} images to {args.output} ({len(failed)} skipped)')
    if not written:
        raise UserError(
            f'none of the {len(files)} images in {args.input} could be read (see the "skipped" lines above); give a '
            'folder of valid PNG / JPEG / TIFF / BMP images.'
        )
