"""Additive white Gaussian noise (AWGN) denoising dataset for BasicSR.

Only clean images are stored; the noisy input is synthesised: a fresh random draw per sample for training, a fixed
per-image draw for validation/testing (see :func:`add_validation_noise`), so PSNR numbers compare across tools.
"""

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from basicsr.data.transforms import augment
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data

from qdr_plugin.option_rules import MISSING, OptionsError, is_number, need_bool, need_choice, need_int, need_number
from qdr_plugin.registry import register

from .dataset_options import check_clean_images, check_dataset_keys, random_crop, training_phase
from .image_source import IMG_EXTENSIONS, ImageSource

__all__ = ['IMG_EXTENSIONS', 'GaussianNoiseDataset', 'add_validation_noise']


def add_validation_noise(img: np.ndarray, sigma: float, index: int) -> np.ndarray:
    """Add the deterministic validation noise of image number ``index`` to ``img``.

    The recipe is ``float32(float64(img) + numpy.random.default_rng(index).normal(0, sigma / 255, img.shape))``,
    without clipping.

    Args:
        img: Clean image in [0, 1], ``H x W`` for gray (no channel axis) or ``H x W x 3`` in RGB order.
        sigma: Noise standard deviation on the 0..255 scale, >= 0.
        index: Seed of the draw: the position of the image in the name-sorted file list (from 0), plus any offset.

    Returns:
        The noisy image, float32, same shape as ``img``.
    """
    if sigma < 0:
        raise ValueError(f'sigma must be >= 0 (noise std on the 0..255 scale), got {sigma}.')
    noise = np.random.default_rng(index).normal(0.0, sigma / 255.0, img.shape)
    return (np.asarray(img, dtype=np.float64) + noise).astype(np.float32)


def _in_ch(opt: Mapping[str, Any], path: str) -> int:
    return need_choice(opt, path, 'in_ch', (1, 3), default=1, fix='Write in_ch: 1 (gray) or in_ch: 3 (colour).')


def _noise_levels(opt: Mapping[str, Any], path: str, train: bool) -> tuple[float | None, tuple[float, float] | None]:
    """The rules of ``sigma`` / ``sigma_range``; returns ``(sigma, None)`` or ``(None, (lo, hi))``."""
    sigma, sigma_range = opt.get('sigma'), opt.get('sigma_range')
    if sigma is not None and sigma_range is not None:
        raise OptionsError(f'{path}.sigma_range', 'sigma and sigma_range are both set', sigma_range,
                           'Keep only one: sigma for a fixed noise level, sigma_range: [lo, hi] (train only) for a '
                           'random level per sample.')
    if sigma is None and sigma_range is None:
        raise OptionsError(f'{path}.sigma', 'neither sigma nor sigma_range is set', opt.get('sigma', MISSING),
                           'Add sigma: 25 (noise std on the 0..255 scale), or for training sigma_range: [0, 55] for a '
                           'random level per sample.')
    if sigma is not None:
        return float(need_number(opt, path, 'sigma', example='25')), None
    if not train:
        raise OptionsError(f'{path}.sigma_range', f"is for the train dataset only, this one is {opt['phase']!r}",
                           sigma_range, 'Validation noise is deterministic: set sigma: <value> (one dataset per '
                           'noise level).')
    if (not isinstance(sigma_range, (list, tuple)) or len(sigma_range) != 2 or not all(map(is_number, sigma_range))
            or not 0 <= sigma_range[0] <= sigma_range[1]):
        raise OptionsError(f'{path}.sigma_range', 'must be [lo, hi] with 0 <= lo <= hi', sigma_range,
                           'Write e.g. sigma_range: [0, 55] (0..255 scale).')
    return None, (float(sigma_range[0]), float(sigma_range[1]))


@register(DATASET_REGISTRY)
class GaussianNoiseDataset(data.Dataset):
    """Clean images from one folder (or LMDB), returned with a Gaussian-noise copy as ``lq``.

    Options (``opt``, as in a BasicSR ``datasets`` entry; ``phase`` is set by BasicSR):
        dataroot_gt (str): Folder of clean images (``.png .jpg .jpeg .bmp .tif .tiff``, not recursive), or with
            ``io_backend: {type: lmdb}`` an LMDB folder made by ``basicsr.utils.lmdb_util.make_lmdb_from_imgs``
            (``meta_info.txt`` inside). Required.
        io_backend (dict): ``{type: disk}`` (default) or ``{type: lmdb}`` plus LMDB open options.
        in_ch (int): 1 = gray, 3 = colour (RGB tensors). Default 1.
        sigma (float): Noise std on the 0..255 scale, >= 0.
        sigma_range (list[float]): ``[lo, hi]``, train only: each sample draws its sigma uniformly from it.
            Exactly one of ``sigma`` / ``sigma_range`` must be set.
        gt_size (int): Train only, required there: size of the random square crop.
        use_hflip, use_rot (bool): Train only: basicsr ``augment`` flips / rotations. Default False.
        noise_seed_offset (int): Val/test only: added to the image index to seed the noise, >= 0. Default 0.

    Returns per item ``{'lq', 'gt', 'lq_path', 'gt_path'}``: float32 ``C x H x W`` tensors in about [0, 1] (``lq``
    is not clipped) and the image path (for LMDB, its key) twice, since ``lq`` has no file of its own.

    Reading: images are decoded with ``cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR`` (as ``IMREAD_UNCHANGED``, but
    alpha dropped and EXIF orientation applied). 8-bit values are divided by 255, 16-bit values (e.g. 16-bit PNG)
    by 65535, in float32. With ``in_ch: 1`` a colour image is converted with ``cv2.COLOR_BGR2GRAY`` on its integer
    values; with ``in_ch: 3`` a gray image is repeated into 3 equal channels. Unreadable files raise
    :class:`~qdr_plugin.errors.UserError` (a ValueError).

    Training noise: the gt crop (after ``augment``) gets ``torch.randn_like(gt) * sigma / 255`` added, without
    clipping, from torch's global RNG (seeded by BasicSR; DataLoader workers get distinct seeds); with
    ``sigma_range`` the per-sample sigma is ``lo + (hi - lo) * torch.rand(1)``.

    Validation/test noise protocol (fixed, so that numbers compare across tools): whole images, no crop. Files
    are sorted by name (for LMDB: by the names in ``meta_info.txt``); the image at position ``i`` (from 0) gets
    ``lq = float32(float64(img) + numpy.random.default_rng(i + noise_seed_offset).normal(0, sigma / 255,
    img.shape))``, no clipping, where ``img`` is the float32 [0, 1] image read as above, shaped ``H x W`` for gray
    (no channel axis) and ``H x W x 3`` in RGB order for colour. :func:`add_validation_noise` implements it.
    """

    OPTION_KEYS = ('dataroot_gt', 'io_backend', 'in_ch', 'sigma', 'sigma_range', 'gt_size', 'use_hflip', 'use_rot',
                   'noise_seed_offset')
    """The dataset's own option keys (besides basicsr's generic ones)."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        checked = self.check_options(opt)
        self.train, self.in_ch = checked['train'], checked['in_ch']
        self.sigma, self.sigma_range = checked['sigma'], checked['sigma_range']
        self.noise_seed_offset = checked['noise_seed_offset']
        self.gt_size, self.use_hflip, self.use_rot = checked['gt_size'], checked['use_hflip'], checked['use_rot']
        self.source = checked['source']
        self.paths = self.source.paths

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], path: str = 'GaussianNoiseDataset',
                      base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """The rules of the options (see the class docstring), for the constructor and the pre-flight checker.

        Args:
            opt: The dataset block as basicsr hands it over (``phase`` set).
            path: Its key path in error messages (``datasets.train`` from the checker).
            base_dir: The directory relative paths start from; ``None``: the working directory.

        Returns:
            The checked values with defaults filled in: ``train``, ``in_ch``, ``sigma`` / ``sigma_range``,
            ``noise_seed_offset``, ``gt_size`` (``None`` outside training), ``use_hflip``, ``use_rot``, and
            ``source``, the :class:`ImageSource` of ``dataroot_gt`` (listed; no image is read).

        Raises:
            OptionsError: At ``<path>.<key>`` (a missing folder: :class:`OptionsPathError`, a FileNotFoundError).
        """
        check_dataset_keys(opt, path, cls.OPTION_KEYS)
        train = training_phase(opt, path)
        in_ch = _in_ch(opt, path)
        sigma, sigma_range = _noise_levels(opt, path, train)
        return {
            'train': train,
            'in_ch': in_ch,
            'sigma': sigma,
            'sigma_range': sigma_range,
            'noise_seed_offset': need_int(opt, path, 'noise_seed_offset', 0, default=0),
            'gt_size': need_int(opt, path, 'gt_size', 1, required=True, example='64') if train else None,
            'use_hflip': need_bool(opt, path, 'use_hflip', default=False),
            'use_rot': need_bool(opt, path, 'use_rot', default=False),
            'source': ImageSource(opt.get('dataroot_gt'), opt.get('io_backend'), path, what='clean images',
                                  base_dir=base_dir),
        }

    @classmethod
    def check_images(cls, opt: Mapping[str, Any], path: str = 'GaussianNoiseDataset',
                     base_dir: str | os.PathLike | None = None) -> None:
        """What the pre-flight check can tell from the images before training: for training, every image at least
        ``gt_size`` on its shorter side (file headers only); for validation / testing, every image decodes (each
        one is read once).

        Raises:
            OptionsError: At ``<path>.gt_size``, naming the smallest image.
            UserError: Naming a file that cannot be read.
        """
        check_clean_images(cls.check_options(opt, path, base_dir), path)

    @classmethod
    def lq_channels(cls, opt: Mapping[str, Any], path: str = 'GaussianNoiseDataset') -> tuple[str, int]:
        """The option that sets the channel count of ``lq`` (the network's input) and that count."""
        return 'in_ch', _in_ch(opt, path)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        img, _ = self.source.read(path, self.in_ch)
        if self.train:
            crop = random_crop([img], self.gt_size, 'GaussianNoiseDataset', f"image '{path}'")[0]
            img = augment(crop, self.use_hflip, self.use_rot)
            gt = img2tensor(img, bgr2rgb=False, float32=True)
            if self.sigma_range is None:
                sigma = self.sigma
            else:
                lo, hi = self.sigma_range
                sigma = lo + (hi - lo) * torch.rand(1).item()
            lq = gt + torch.randn_like(gt) * (sigma / 255.0)
        else:
            noisy = add_validation_noise(img[..., 0] if self.in_ch == 1 else img, self.sigma,
                                         index + self.noise_seed_offset)
            gt = img2tensor(img, bgr2rgb=False, float32=True)
            lq = img2tensor(noisy.reshape(img.shape), bgr2rgb=False, float32=True)
        return {'lq': lq, 'gt': gt, 'lq_path': path, 'gt_path': path}

    def __len__(self) -> int:
        return len(self.paths)
