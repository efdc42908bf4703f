"""Bicubic super-resolution dataset for BasicSR: HR images only, LR made on the fly with MATLAB's ``imresize``.

Benchmark LR sets (Set5 ``LR_bicubic``, DIV2K ``LR_bicubic``) are MATLAB ``imresize(HR, 1/scale)`` of the HR image
mod-cropped to the scale, saved as 8-bit images. This dataset makes the same LR from any folder (or LMDB) of HR
images with basicsr's MATLAB-compatible :func:`basicsr.utils.matlab_functions.imresize`, so no LR folder is needed;
when one exists (``dataroot_lq``), its files are read instead.
"""

import random
from typing import Any

import numpy as np
from basicsr.data.transforms import augment, mod_crop
from basicsr.utils import img2tensor
from basicsr.utils.color_util import rgb2ycbcr
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from qdr_plugin.registry import register

from .image_source import ImageSource, is_int, is_training_phase

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
    images scaled to [0, 1]; unreadable files raise ValueError naming the file.

    Made LR (:func:`bicubic_downscale`): training takes a random ``gt_size`` HR crop, applies the flips / rotation,
    then downscales it; validation/test mod-crops the whole HR image to a multiple of ``scale`` (as basicsr's
    ``mod_crop``) and downscales that. The LR is clipped and rounded to the HR image's integer levels, as an LR
    file would be. With ``dataroot_lq``, the HR image must be ``scale`` times the LR image after mod-cropping;
    training crops the pair at matching positions (LR crop ``gt_size / scale``).
    """

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        self.train = is_training_phase(opt, _OWNER)

        self.scale = opt.get('scale')
        if not is_int(self.scale) or self.scale not in SCALES:
            raise ValueError(
                f'{_OWNER}: scale must be one of {", ".join(map(str, SCALES))}, got {self.scale!r}; set e.g. '
                'scale: 4 at the top level of the options file (basicsr copies it into every dataset).'
            )
        self.color = opt.get('color') or 'rgb'
        if self.color not in COLOR_MODES:
            raise ValueError(f'{_OWNER}: color must be rgb, y or gray, got {self.color!r}.')
        self.channels = 1 if self.color == 'gray' else 3

        if self.train:
            self.gt_size = opt.get('gt_size')
            if not is_int(self.gt_size) or self.gt_size < self.scale or self.gt_size % self.scale:
                raise ValueError(
                    f'{_OWNER}: gt_size (HR training crop size) must be a positive multiple of scale '
                    f'{self.scale}, got {self.gt_size!r}; e.g. gt_size: {16 * self.scale}.'
                )
            self.use_hflip = bool(opt.get('use_hflip', False))
            self.use_rot = bool(opt.get('use_rot', False))

        self.gt_source = ImageSource(opt.get('dataroot_gt'), opt.get('io_backend'), _OWNER, what='HR images',
                                     meta_info_file=opt.get('meta_info_file'))
        self.paths = self.gt_source.paths
        self.lq_source: ImageSource | None = None
        self.lq_paths: list[str] = []
        if opt.get('dataroot_lq') is not None:
            self.lq_source = ImageSource(opt['dataroot_lq'], opt.get('io_backend'), _OWNER, key='dataroot_lq',
                                         what='LR images')
            self.lq_paths = self._pair_lq_paths(opt.get('filename_tmpl', '{}'))

    def _pair_lq_paths(self, tmpl: Any) -> list[str]:
        """The LR path of every HR path: ``filename_tmpl.format(<HR name>)``."""
        if not isinstance(tmpl, str) or '{}' not in tmpl:
            raise ValueError(f"{_OWNER}: filename_tmpl must be a string with one '{{}}' (e.g. '{{}}x4'), got {tmpl!r}.")
        lq_by_name = {self.lq_source.name(path): path for path in self.lq_source.paths}
        paths = []
        for gt_path in self.paths:
            name = self.gt_source.name(gt_path)
            lq_name = tmpl.format(name)
            if lq_name not in lq_by_name:
                guess = f'{name}x{self.scale}'
                hint = (
                    f"; the folder has '{guess}': set filename_tmpl: '{{}}x{self.scale}'"
                    if guess in lq_by_name
                    else f'; add it, fix filename_tmpl (now {tmpl!r}) or drop dataroot_lq to make the LR by resizing'
                )
                raise FileNotFoundError(
                    f"{_OWNER}: no LR image '{lq_name}' (any image extension) in dataroot_lq "
                    f"'{self.lq_source.root}' for HR image '{self.gt_source.describe(gt_path)}'{hint}."
                )
            paths.append(lq_by_name[lq_name])
        return paths

    def _random_crop(self, img: np.ndarray, path: str) -> np.ndarray:
        h, w = img.shape[:2]
        size = self.gt_size
        if h < size or w < size:
            raise ValueError(
                f"{_OWNER}: HR image '{self.gt_source.describe(path)}' is {h}x{w} (HxW), smaller than gt_size "
                f'{size}x{size}; lower gt_size or remove the image.'
            )
        top, left = random.randint(0, h - size), random.randint(0, w - size)
        return img[top:top + size, left:left + size, :]

    def _paired(self, hr: np.ndarray, lq: np.ndarray, gt_path: str, lq_path: str) -> tuple[np.ndarray, np.ndarray]:
        """Check that ``hr`` mod-cropped is ``scale`` x ``lq``; training: matching random crops."""
        s = self.scale
        (h, w), (lh, lw) = hr.shape[:2], lq.shape[:2]
        if (h // s, w // s) != (lh, lw):
            raise ValueError(
                f"{_OWNER}: LR image '{self.lq_source.describe(lq_path)}' is {lh}x{lw} (HxW), but HR image "
                f"'{self.gt_source.describe(gt_path)}' is {h}x{w}, which needs {h // s}x{w // s} at scale {s}; "
                'fix the pair (or the scale), or drop dataroot_lq to make the LR by resizing.'
            )
        if not self.train:
            return hr[:lh * s, :lw * s], lq
        size = self.gt_size // s
        if lh < size or lw < size:
            raise ValueError(
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
                hr = augment(self._random_crop(hr, gt_path), self.use_hflip, self.use_rot)
            else:
                h, w = hr.shape[:2]
                if h < self.scale or w < self.scale:
                    raise ValueError(
                        f"{_OWNER}: HR image '{self.gt_source.describe(gt_path)}' is {h}x{w} (HxW), smaller than "
                        f'the scale {self.scale}; remove it.'
                    )
                hr = mod_crop(hr, self.scale)
            lq = bicubic_downscale(hr, self.scale, top)
        if self.color == 'y':
            hr, lq = rgb2ycbcr(hr, y_only=True)[..., None], rgb2ycbcr(lq, y_only=True)[..., None]
        gt_t, lq_t = img2tensor([hr, lq], bgr2rgb=False, float32=True)
        return {'lq': lq_t, 'gt': gt_t, 'lq_path': lq_path, 'gt_path': gt_path}

    def __len__(self) -> int:
        return len(self.paths)
