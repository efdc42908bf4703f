"""Restore a folder of images with a PyTorch network or an ONNX model, optionally in tiles.

The I/O contract is the one of ``docs/deployment.md``.

A restorer is any ``Callable[[np.ndarray], np.ndarray]`` taking and returning float32 ``N x C x H x W`` arrays with
values in [0, 1] (RGB channel order for colour): :func:`torch_restorer` wraps an ``nn.Module``, :func:`onnx_restorer`
an ONNX Runtime session. :func:`tile_restore` runs one on a whole image or tile by tile (the Real-ESRGAN scheme),
:func:`restore_folder` on every image of a folder.
"""

from __future__ import annotations

import io
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from qdr_plugin.errors import UserError
from qdr_plugin.utils.atomic_write import atomic_write_bytes

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')
_JPEG_MAGIC = b'\xff\xd8\xff'

Restorer = Callable[[np.ndarray], np.ndarray]


def _jpeg_is_complete(data: bytes) -> bool:
    """cv2 decodes a truncated JPEG silently (grey bottom rows, a warning on stderr); Pillow refuses it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, SyntaxError, ValueError):
        return False
    return True


def read_image(path: str | Path, channels: int) -> np.ndarray:
    """The image at ``path`` as float32 ``H x W x channels`` in [0, 1] (RGB for ``channels=3``).

    8-bit images are divided by 255, 16-bit ones by 65535 (float images are clipped to [0, 1]); alpha is dropped,
    gray is repeated to 3 channels, colour is converted to gray with ``cv2.COLOR_BGR2GRAY`` for ``channels=1``.
    Raises ``ValueError`` naming the file when it cannot be read or decoded (including truncated PNG / JPEG).
    """
    if channels not in (1, 3):
        raise ValueError(f'channels must be 1 or 3, got {channels}.')
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f'{path}: cannot read the file ({error.strerror or error}).') from error
    img = None
    if data:
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            img = None
    if img is None or img.size == 0 or (data.startswith(_JPEG_MAGIC) and not _jpeg_is_complete(data)):
        raise ValueError(f'{path}: cannot decode it as an image (not an image file, or truncated).')

    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img.astype(np.float32), 0.0, 1.0)
    else:
        raise ValueError(f'{path}: unsupported pixel type {img.dtype} (use 8- or 16-bit images).')

    if img.ndim == 3 and img.shape[2] in (1, 2):  # gray (+ alpha)
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 4:  # BGRA
        img = img[:, :, :3]
    elif img.ndim != 2 and not (img.ndim == 3 and img.shape[2] == 3):
        raise ValueError(f'{path}: unsupported image layout {img.shape}.')

    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2) if channels == 3 else img[:, :, None]
    elif channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
    else:
        img = img[:, :, ::-1]  # BGR -> RGB
    return np.ascontiguousarray(img, dtype=np.float32)


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write a float ``H x W x C`` (C = 1 or 3, RGB) or ``H x W`` image in [0, 1] as an 8-bit PNG, atomically."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]  # RGB -> BGR
    elif img.ndim != 2:
        raise ValueError(f'write_image: expected H x W x 1 or H x W x 3, got shape {img.shape}.')
    out = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    ok, encoded = cv2.imencode('.png', out)
    if not ok:
        raise OSError(f'{path}: cv2 could not encode the PNG.')
    atomic_write_bytes(path, encoded.tobytes())


def tile_restore(restore: Restorer, img: np.ndarray, tile: int | None, tile_pad: int, scale: int = 1) -> np.ndarray:
    """``restore(img)`` for a float32 ``N x C x H x W`` array, whole or in tiles; returns ``N x C' x sH x sW``.

    With ``tile``, the image is cut into ``tile x tile`` tiles (smaller at the right / bottom edges); each is
    restored with up to ``tile_pad`` pixels of context on every side (less at the image border) and only its
    central, un-padded part is kept, at ``scale`` times the input coordinates (Real-ESRGAN's tiling). For a
    network whose receptive-field radius is at most ``tile_pad`` the result equals the untiled one.
    """
    if img.ndim != 4:
        raise ValueError(f'tile_restore: expected an N x C x H x W array, got shape {img.shape}.')
    if tile is not None and tile <= 0:
        raise ValueError(f'tile must be a positive number of pixels, got {tile}.')
    if tile_pad < 0:
        raise ValueError(f'tile_pad must be >= 0, got {tile_pad}.')
    if scale < 1:
        raise ValueError(f'scale must be >= 1, got {scale}.')
    img = np.ascontiguousarray(img, dtype=np.float32)
    n, _, height, width = img.shape

    def run(part: np.ndarray) -> np.ndarray:
        out = np.asarray(restore(part), dtype=np.float32)
        want = (part.shape[0], part.shape[2] * scale, part.shape[3] * scale)
        if out.ndim != 4 or (out.shape[0], out.shape[2], out.shape[3]) != want:
            raise ValueError(
                f'the restorer turned a {tuple(part.shape)} input into {tuple(out.shape)}, expected N x C x '
                f'{want[1]} x {want[2]} for scale {scale} (is "scale" in the options right?).'
            )
        return out

    if tile is None or (tile >= height and tile >= width):
        return run(img)

    output = None
    for y in range(math.ceil(height / tile)):
        for x in range(math.ceil(width / tile)):
            y0, y1 = y * tile, min((y + 1) * tile, height)
            x0, x1 = x * tile, min((x + 1) * tile, width)
            py0, py1 = max(y0 - tile_pad, 0), min(y1 + tile_pad, height)
            px0, px1 = max(x0 - tile_pad, 0), min(x1 + tile_pad, width)
            out = run(img[:, :, py0:py1, px0:px1])
            if output is None:
                output = np.empty((n, out.shape[1], height * scale, width * scale), dtype=np.float32)
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            output[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = out[
                :, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
            ]
    return output


def torch_restorer(net: nn.Module) -> Restorer:
    """A restorer running ``net`` in eval mode without gradients on its device, output clamped to [0, 1]."""
    net.eval()
    parameter = next(net.parameters(), None)
    device = parameter.device if parameter is not None else torch.device('cpu')

    def restore(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device))
        return y.clamp(0.0, 1.0).cpu().numpy().astype(np.float32, copy=False)

    return restore


def onnx_restorer(path: str | Path, threads: int | None = None) -> Restorer:
    """A restorer running the ONNX model at ``path`` with ONNX Runtime's CPU provider (``threads`` intra-op threads,
    ONNX Runtime's default when ``None``), output clipped to [0, 1]. On an x86 CPU without VNNI, a file whose int8
    weights its kernels saturate gets a warning naming the fix (:mod:`qdr_plugin.deploy.no_vnni`)."""
    import onnx
    import onnxruntime as ort

    from .no_vnni import int8_weights_saturate, saturating_weight_count

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'ONNX model {path} does not exist.')
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    except Exception as error:  # noqa: BLE001  (ONNX Runtime raises its own exception types)
        raise ValueError(f'{path}: ONNX Runtime cannot load it ({str(error).splitlines()[0]}).') from error
    input_name = session.get_inputs()[0].name
    if int8_weights_saturate():
        count = saturating_weight_count(onnx.load(str(path)))
        if count:
            warnings.warn(f'{path}: this CPU has no VNNI, and {count} int8 weight tensors hold values outside '
                          '[-64, 63], which ONNX Runtime\'s integer kernels saturate here: the output departs from '
                          'the trained network. For such CPUs train with quant.weight_bits: 7 (exact and '
                          'fast), or export with basicsr export --no-vnni (exact, at about the FP32 file\'s '
                          'speed).', stacklevel=2)

    def restore(x: np.ndarray) -> np.ndarray:
        y = session.run(None, {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.clip(y, 0.0, 1.0).astype(np.float32, copy=False)

    return restore


def list_images(in_dir: str | Path) -> list[Path]:
    """The PNG / JPEG / TIFF / BMP files directly in ``in_dir`` (any case of suffix), sorted; ``FileNotFoundError``
    when the folder does not exist or holds none."""
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise FileNotFoundError(f'input folder {in_dir} does not exist (or is not a folder).')
    files = sorted(p for p in in_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(
            f'input folder {in_dir} has no images ({", ".join(IMAGE_SUFFIXES)}; sub-folders are not searched).'
        )
    return files


def refuse_input_folder(in_dir: str | Path, out_dir: str | Path) -> None:
    """A :class:`UserError` when ``out_dir`` is ``in_dir``: the restored PNGs would overwrite the inputs."""
    if Path(out_dir).resolve() == Path(in_dir).resolve():
        raise UserError(
            f'the output folder {out_dir} is the input folder: the PNGs would overwrite the inputs; '
            'choose another output folder.'
        )


def output_name(path: str | Path) -> str:
    """The file name :func:`restore_folder` writes the restored ``path`` to: ``<stem>.png``."""
    return f'{Path(path).stem}.png'


def restore_folder(
    restore: Restorer,
    in_dir: str | Path,
    out_dir: str | Path,
    channels: int,
    tile: int | None,
    tile_pad: int,
    scale: int = 1,
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Restore every image of ``in_dir`` (see :func:`list_images`) into ``out_dir/<stem>.png``.

    A file that cannot be read, or whose output name another input already took, is reported on stderr (one line)
    and skipped. Returns ``(written PNG paths, [(skipped input, reason)])``.
    """
    files = list_images(in_dir)
    refuse_input_folder(in_dir, out_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    failed: list[tuple[Path, str]] = []
    taken: dict[str, Path] = {}
    for path in tqdm(files, desc='restoring', unit='img', file=sys.stderr):
        target = out_dir / output_name(path)
        try:
            if target.name in taken:
                raise ValueError(f'{path}: its output name {target.name} is taken by {taken[target.name].name}.')
            img = read_image(path, channels)
        except ValueError as error:
            _skip(failed, path, str(error))
            continue
        out = tile_restore(restore, img.transpose(2, 0, 1)[None], tile, tile_pad, scale)
        try:
            write_image(target, out[0].transpose(1, 2, 0))
        except OSError as error:
            _skip(failed, path, f'{target}: cannot write it ({error.strerror or error}).')
            continue
        taken[target.name] = path
        written.append(target)
    return written, failed


def _skip(failed: list[tuple[Path, str]], path: Path, reason: str) -> None:
    failed.append((path, reason))
    tqdm.write(f'skipped {reason}', file=sys.stderr)
