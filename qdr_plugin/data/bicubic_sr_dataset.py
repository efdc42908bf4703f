"""Bicubic super-resolution dataset for BasicSR: HR images only, LR made on the fly with MATLAB's ``imresize``.

Benchmark LR sets (Set5 ``LR_bicubic``, DIV2K ``LR_bicubic``) are MATLAB ``imresize(HR, 1/scale)`` of the HR image
mod-cropped to the scale, saved as 8-bit images. This dataset makes the same LR from any folder (or LMDB) of HR
images with basicsr's MATLAB-compatible :func:`basicsr.utils.matlab_functions.imresize`, so no LR folder is needed;
when one exists (``dataroot_lq``), its files are read instead.
"""

import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
from basicsr.data.transforms import augment, mod_crop
from basicsr.utils import img2tensor
from basicsr.utils.color_util import rgb2ycbcr
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from qdr_plugin.errors import UserError
from qdr_plugin.option_rules import OptionsError, OptionsPathError, need_bool, need_choice, need_int
from qdr_plugin.registry import register

from .dataset_options import check_crop_fits, check_dataset_keys, random_crop, training_phase
from .image_source import ImageSource

__all__ = ['COLOR_MODES', 'SCALES', 'BicubicSRDataset', 'bicubic_downscale']

SCALES = (2, 3, 4, 8)
"""Supported upscaling factors."""

COLOR_MODES = ('rgb', 'y', 'gray')
"""``color`` values: RGB (3 channels), the Y channel of YCbCr (BT.601, as basicsr's ``color: y``), or gray."""

_OWNER = 'BicubicSRDataset'


def bicubic_downscale(hr: np.ndarray, scale: int, top: float = 255.0) -> np.ndarray:
    """The LR image of ``hr`` as a benchmark LR file holds it: MATLAB bicubic ``imresize(hr, 1 / scale)``
    (antialiased), clipped to [0, 1] and rounded to the integer levels of the source (``top`` = 255 for 8-bit).

    Args:
        hr: Float32 ``H x W x C`` image in [0, 1], ``H`` and ``W`` multiples of ``scale``.
        scale: The downscaling factor.
        top: The integer maximum of the source image (255.0 or 65535.0).

    Returns:
        Float32 ``H/scale x W/scale x C`` image in [0, 1].
    """
    lq = np.clip(imresize(hr, 1.0 / scale), 0.0, 1.0)
    return (np.round(lq * top) / top).astype(np.float32)


@register(DATASET_REGISTRY)
class BicubicSRDataset(data.Dataset):
    """HR images from one folder (or LMDB), returned with their bicubic LR as ``lq``.

    Options (``opt``, as in a BasicSR ``datasets`` entry; ``phase`` is set by BasicSR, and ``scale`` is copied in
    from the top-level ``scale`` of the options file):
        dataroot_gt (str): Folder of HR images (``.png .jpg .jpeg .bmp .tif .tiff``, not recursive), or with
            ``io_backend: {type: lmdb}`` a BasicSR LMDB (``tools/make_lmdb.py``). Required.
        meta_info_file (str): Optional, disk only: a text file listing the HR images to use, one path relative to
            ``dataroot_gt`` per line (sub-folders allowed, e.g. ``CBSD68/101085.png``), as basicsr's
            ``meta_info_file``; this joins several folders into one training set.
        dataroot_lq (str): Optional folder (or LMDB, same ``io_backend``) of ready-made LR images, read instead of
            resizing; the LR of HR image ``<name>.<ext>`` is ``filename_tmpl.format(<name>)`` with any image
            extension (for an LMDB: that key).
        filename_tmpl (str): See ``dataroot_lq``. Default ``'{}'``; Set5's ``LR_bicubic/X4/babyx4.png``: ``'{}x4'``.
        io_backend (dict): ``{type: disk}`` (default) or ``{type: lmdb}`` plus LMDB open options.
        scale (int): 2, 3, 4 or 8.
        color (str): ``rgb`` (default; gray files are repeated into 3 channels), ``y`` (the Y channel of YCbCr,
            computed from the RGB HR and LR images as basicsr's ``color: y`` does) or ``gray`` (``cv2`` BGR2GRAY).
        gt_size (int): Train only, required there: the HR crop size, a multiple of ``scale``; LR crops are
            ``gt_size / scale``.
        use_hflip, use_rot (bool): Train only: basicsr ``augment`` flips / rotations. Default False.

    Returns per item ``{'lq', 'gt', 'lq_path', 'gt_path'}`` like basicsr's ``PairedImageDataset``: float32
    ``C x H x W`` tensors in [0, 1], ``gt`` exactly ``scale`` times the size of ``lq``; ``lq_path`` is the LR file,
    or the HR path again when the LR is made here.

    Reading: as ``GaussianNoiseDataset`` (:func:`qdr_plugin.data.image_source.decode_image`): 8-bit / 16-bit
    images scaled to [0, 1]; unreadable files raise :class:`~qdr_plugin.errors.UserError` (a ValueError) naming the
    file.

    Made LR (:func:`bicubic_downscale`): training takes a random ``gt_size`` HR crop, applies the flips / rotation,
    then downscales it; validation/test mod-crops the whole HR image to a multiple of ``scale`` (as basicsr's
    ``mod_crop``) and downscales that. The LR is clipped and rounded to the HR image's integer levels, as an LR
    file would be. With ``dataroot_lq``, the HR image must be ``scale`` times the LR image after mod-cropping;
    training crops the pair at matching positions (LR crop ``gt_size / scale``).
    """

    OPTION_KEYS = ('dataroot_gt', 'dataroot_lq', 'meta_info_file', 'io_backend', 'color', 'gt_size', 'use_hflip',
                   'use_rot')
    """The dataset's own option keys (``scale`` and ``filename_tmpl`` are among basicsr's generic ones)."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        checked = self.check_options(opt)
        self.train, self.scale, self.color = checked['train'], checked['scale'], checked['color']
        self.channels = 1 if self.color == 'gray' else 3
        self.gt_size, self.use_hflip, self.use_rot = checked['gt_size'], checked['use_hflip'], checked['use_rot']
        self.gt_source, self.lq_source = checked['gt_source'], checked['lq_source']
        self.paths, self.lq_paths = self.gt_source.paths, checked['lq_paths']

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], path: str = _OWNER,
                      base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """The rules of the options (see the class docstring), for the constructor and the pre-flight checker.

        Args:
            opt: The dataset block as basicsr hands it over (``phase`` set, ``scale`` copied in).
            path: Its key path in error messages (``datasets.train`` from the checker).
            base_dir: The directory relative paths start from; ``None``: the working directory.

        Returns:
            The checked values with defaults filled in: ``train``, ``scale``, ``color``, ``gt_size`` (``None``
            outside training), ``use_hflip``, ``use_rot``, ``gt_source`` and ``lq_source`` (the
            :class:`ImageSource` of ``dataroot_gt`` / ``dataroot_lq``, ``None`` without one: listed, no image
            read) and ``lq_paths`` (the LR file of every HR image, ``[]`` without ``dataroot_lq``).

        Raises:
            OptionsError: At ``<path>.<key>`` (a missing file or folder: :class:`OptionsPathError`, a
            FileNotFoundError).
        """
        check_dataset_keys(opt, path, cls.OPTION_KEYS)
        train = training_phase(opt, path)
        scale = need_choice(opt, path, 'scale', SCALES, required=True,
                            fix='Write e.g. scale: 4 at the top level of the options file (basicsr copies it into '
                            'every dataset).')
        color = _color(opt, path)
        gt_size = None
        if train:
            gt_size = need_int(opt, path, 'gt_size', 1, required=True, example=str(16 * scale))
            if gt_size % scale:
                raise OptionsError(f'{path}.gt_size', f'must be a positive multiple of scale {scale} (the HR crop)',
                                   gt_size, f'Write e.g. gt_size: {16 * scale}.')
        tmpl = opt.get('filename_tmpl', '{}')
        if not isinstance(tmpl, str) or '{}' not in tmpl:
            raise OptionsError(f'{path}.filename_tmpl', "must be a string with one '{}'", tmpl,
                               "Write e.g. filename_tmpl: '{}x4' (Set5's LR_bicubic/X4/babyx4.png).")
        use_hflip = need_bool(opt, path, 'use_hflip', default=False)
        use_rot = need_bool(opt, path, 'use_rot', default=False)
        gt_source = ImageSource(opt.get('dataroot_gt'), opt.get('io_backend'), path, what='HR images',
                                meta_info_file=opt.get('meta_info_file'), base_dir=base_dir)
        lq_source = None
        if opt.get('dataroot_lq') is not None:
            lq_source = ImageSource(opt['dataroot_lq'], opt.get('io_backend'), path, key='dataroot_lq',
                                    what='LR images', base_dir=base_dir)
        return {
            'train': train, 'scale': scale, 'color': color, 'gt_size': gt_size, 'use_hflip': use_hflip,
            'use_rot': use_rot, 'gt_source': gt_source, 'lq_source': lq_source,
            'lq_paths': [] if lq_source is None else _pair_lq_paths(gt_source, lq_source, tmpl, scale, path),
        }

    @classmethod
    def check_images(cls, opt: Mapping[str, Any], path: str = _OWNER,
                     base_dir: str | os.PathLike | None = None) -> None:
        """What the pre-flight check can tell from the images before training: with ``dataroot_lq``, every HR image
        ``scale`` times its LR image (file headers); for training, every HR image at least ``gt_size`` on its shorter
        side (headers); for validation / testing, every image decodes (each one is read once) and is at least
        ``scale`` pixels on each side.

        Raises:
            OptionsError: At ``<path>.gt_size``, naming the smallest image.
            UserError: Naming a file that cannot be read, an LR / HR pair of the wrong sizes, or an image smaller
                than the scale.
        """
        checked = cls.check_options(opt, path, base_dir)
        gt_source, lq_source, scale = checked['gt_source'], checked['lq_source'], checked['scale']
        if lq_source is not None:
            for gt_path, lq_path in zip(gt_source.paths, checked['lq_paths']):
                hr, lq = gt_source.size(gt_path), lq_source.size(lq_path)
                if hr is not None and lq is not None and (hr[0] // scale, hr[1] // scale) != lq:
                    raise UserError(_pair_mismatch(gt_source.describe(gt_path), hr, lq_source.describe(lq_path), lq,
                                                   scale))
        if checked['train']:
            check_crop_fits(gt_source, checked['gt_size'], f'{path}.gt_size')
            return
        channels = 1 if checked['color'] == 'gray' else 3
        for source in filter(None, (gt_source, lq_source)):
            source.check_decodable(channels)
        smallest = gt_source.smallest()
        if smallest is not None and min(smallest[1:]) < scale:
            raise UserError(_too_small(gt_source.describe(smallest[0]), smallest[1:], scale))

    @classmethod
    def lq_channels(cls, opt: Mapping[str, Any], path: str = _OWNER) -> tuple[str, int]:
        """The option that sets the channel count of ``lq`` (the network's input) and that count."""
        return 'color', 3 if _color(opt, path) == 'rgb' else 1

    def _paired(self, hr: np.ndarray, lq: np.ndarray, gt_path: str, lq_path: str) -> tuple[np.ndarray, np.ndarray]:
        """Check that ``hr`` mod-cropped is ``scale`` x ``lq``; training: matching random crops."""
        s = self.scale
        (h, w), (lh, lw) = hr.shape[:2], lq.shape[:2]
        if (h // s, w // s) != (lh, lw):
            raise UserError(_pair_mismatch(self.gt_source.describe(gt_path), (h, w),
                                           self.lq_source.describe(lq_path), (lh, lw), s))
        if not self.train:
            return hr[:lh * s, :lw * s], lq
        size = self.gt_size // s
        if lh < size or lw < size:
            raise UserError(
                f"{_OWNER}: HR image '{self.gt_source.describe(gt_path)}' is {h}x{w} (HxW), smaller than gt_size "
                f'{self.gt_size}x{self.gt_size}; lower gt_size or remove the image.'
            )
        top, left = random.randint(0, lh - size), random.randint(0, lw - size)
        lq = lq[top:top + size, left:left + size]
        hr = hr[top * s:(top + size) * s, left * s:(left + size) * s]
        return tuple(augment([hr, lq], self.use_hflip, self.use_rot))

    def __getitem__(self, index: int) -> dict[str, Any]:
        gt_path = self.paths[index]
        hr, top = self.gt_source.read(gt_path, self.channels)
        if self.lq_source is not None:
            lq_path = self.lq_paths[index]
            lq, _ = self.lq_source.read(lq_path, self.channels)
            hr, lq = self._paired(hr, lq, gt_path, lq_path)
        else:
            lq_path = gt_path
            if self.train:
                crop = random_crop([hr], self.gt_size, _OWNER, f"HR image '{self.gt_source.describe(gt_path)}'")[0]
                hr = augment(crop, self.use_hflip, self.use_rot)
            else:
                h, w = hr.shape[:2]
                if h < self.scale or w < self.scale:
                    raise UserError(_too_small(self.gt_source.describe(gt_path), (h, w), self.scale))
                hr = mod_crop(hr, self.scale)
            lq = bicubic_downscale(hr, self.scale, top)
        if self.color == 'y':
            hr, lq = rgb2ycbcr(hr, y_only=True)[..., None], rgb2ycbcr(lq, y_only=True)[..., None]
        gt_t, lq_t = img2tensor([hr, lq], bgr2rgb=False, float32=True)
        return {'lq': lq_t, 'gt': gt_t, 'lq_path': lq_path, 'gt_path': gt_path}

    def __len__(self) -> int:
        return len(self.paths)

def _pair_mismatch(hr_name: str, hr_size: tuple[int, int], lq_name: str, lq_size: tuple[int, int], scale: int) -> str:
    """The message for an LR image whose size is not the HR image's divided by ``scale``."""
    (h, w), (lh, lw) = hr_size, lq_size
    return (f"{_OWNER}: LR image '{lq_name}' is {lh}x{lw} (HxW), but HR image '{hr_name}' is {h}x{w}, which needs "
            f'{h // scale}x{w // scale} at scale {scale}; fix the pair (or the scale), or drop dataroot_lq to make the '
            'LR by resizing.')


def _too_small(name: str, size: tuple[int, int], scale: int) -> str:
    """The message for an HR image smaller than the scale on a side."""
    return f"{_OWNER}: HR image '{name}' is {size[0]}x{size[1]} (HxW), smaller than the scale {scale}; remove it."


def _color(opt: Mapping[str, Any], path: str) -> str:
    """The rule of ``color``: one of :data:`COLOR_MODES`; ``~`` or absent is ``rgb``."""
    return need_choice(opt, path, 'color', COLOR_MODES, default='rgb',
                       fix='Write color: rgb (3 channels), y (the Y channel) or gray.')


def _pair_lq_paths(gt_source: ImageSource, lq_source: ImageSource, tmpl: str, scale: int, path: str) -> list[str]:
    """The LR path of every HR path: ``filename_tmpl.format(<HR name>)``, any image extension."""
    lq_by_name = {lq_source.name(lq_path): lq_path for lq_path in lq_source.paths}
    paths = []
    for gt_path in gt_source.paths:
        name = gt_source.name(gt_path)
        lq_name = tmpl.format(name)
        if lq_name not in lq_by_name:
            guess = f'{name}x{scale}'
            fix = (f"The folder has '{guess}': set filename_tmpl: '{{}}x{scale}'." if guess in lq_by_name
                   else 'Add it, fix filename_tmpl or drop dataroot_lq to make the LR by resizing.')
            raise OptionsPathError(f'{path}.filename_tmpl', f"gives no LR image '{lq_name}' (any image extension) in "
                                   f"dataroot_lq '{lq_source.root}' for HR image '{gt_source.describe(gt_path)}'",
                                   tmpl, fix)
        paths.append(lq_by_name[lq_name])
    return paths
