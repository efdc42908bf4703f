"""Pairs made on the fly from clean images: the base of the rain, haze and low-light datasets.

A subclass names its degradation (a function ``(clean, rng, **params) -> degraded`` on float32 ``H x W x C`` images
in [0, 1]) and the rules of its parameter options; this class reads the clean images, degrades them and crops.

Randomness: training draws a fresh degradation per sample from a :class:`numpy.random.Generator` seeded by torch's
global RNG (which basicsr seeds, with distinct seeds per DataLoader worker), so ``manual_seed`` makes a run
repeatable. Validation / testing degrades image ``i`` of the name-sorted list (from 0) with
``numpy.random.default_rng(i + seed_offset)``: the same input every time, in every tool, so the synthetic test
sets (e.g. low light on CBSD68) are fixed benchmarks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from basicsr.data.transforms import augment
from basicsr.utils import img2tensor
from torch.utils import data

from qdr_plugin.option_rules import need_bool, need_choice, need_int

from .dataset_options import check_clean_images, check_dataset_keys, random_crop, training_phase
from .image_source import ImageSource

__all__ = ['SyntheticPairDataset']

_BASE_KEYS = ('dataroot_gt', 'io_backend', 'in_ch', 'gt_size', 'use_hflip', 'use_rot', 'seed_offset')


class SyntheticPairDataset(data.Dataset):
    """Clean images from one folder (or LMDB), returned with a degraded copy as ``lq``.

    Options shared by every subclass (``opt``, as in a BasicSR ``datasets`` entry; ``phase`` is set by BasicSR):
        dataroot_gt (str): Folder of clean images, or an LMDB with ``io_backend: {type: lmdb}``. Required.
        in_ch (int): 3 = colour (RGB tensors, default) or 1 = gray.
        gt_size (int): Train only, required there: side of the random square crop of the degraded pair.
        use_hflip, use_rot (bool): Train only: basicsr ``augment`` flips / rotations of the pair. Default False.
        seed_offset (int): Val/test only: added to the image index to seed its degradation, >= 0. Default 0.

    The whole image is degraded before cropping, so image-scale structure (a depth map, long streaks) is the same in
    training crops as in whole test images. Items: ``{'lq', 'gt', 'lq_path', 'gt_path'}``, float32 ``C x H x W``
    tensors in [0, 1] and the clean image's path twice.
    """

    PARAMETER_KEYS: ClassVar[tuple[str, ...]] = ()
    """The subclass's degradation options."""

    def __init__(self, opt: dict[str, Any]) -> None:
        super().__init__()
        self.opt = opt
        checked = self.check_options(opt)
        self.train, self.in_ch, self.gt_size = checked['train'], checked['in_ch'], checked['gt_size']
        self.use_hflip, self.use_rot = checked['use_hflip'], checked['use_rot']
        self.seed_offset, self.params = checked['seed_offset'], checked['params']
        self.source = checked['source']
        self.paths = self.source.paths

    @classmethod
    def option_keys(cls) -> tuple[str, ...]:
        """The dataset's own option keys (besides basicsr's generic ones)."""
        return _BASE_KEYS + cls.PARAMETER_KEYS

    @classmethod
    def check_parameters(cls, opt: Mapping[str, Any], path: str) -> dict[str, Any]:
        """The subclass's rule of its degradation options; returns the keyword arguments of :meth:`degrade`."""
        raise NotImplementedError

    @staticmethod
    def degrade(clean: np.ndarray, rng: np.random.Generator, **params: Any) -> np.ndarray:
        """The degradation: float32 ``H x W x C`` in [0, 1] in, the degraded image out."""
        raise NotImplementedError

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], path: str | None = None,
                      base_dir: str | os.PathLike | None = None) -> dict[str, Any]:
        """The rules of the options, for the constructor and the pre-flight checker.

        Returns:
            ``train``, ``in_ch``, ``gt_size`` (``None`` outside training), ``use_hflip``, ``use_rot``,
            ``seed_offset``, ``params`` (the degradation's keyword arguments) and ``source`` (the
            :class:`ImageSource` of ``dataroot_gt``; listed, no image read).

        Raises:
            OptionsError: At ``<path>.<key>`` (a missing folder: :class:`OptionsPathError`).
        """
        path = path or cls.__name__
        check_dataset_keys(opt, path, cls.option_keys())
        train = training_phase(opt, path)
        return {
            'train': train,
            'in_ch': cls.lq_channels(opt, path)[1],
            'gt_size': need_int(opt, path, 'gt_size', 1, required=True, example='128') if train else None,
            'use_hflip': need_bool(opt, path, 'use_hflip', default=False),
            'use_rot': need_bool(opt, path, 'use_rot', default=False),
            'seed_offset': need_int(opt, path, 'seed_offset', 0, default=0),
            'params': cls.check_parameters(opt, path),
            'source': ImageSource(opt.get('dataroot_gt'), opt.get('io_backend'), path, what='clean images',
                                  base_dir=base_dir),
        }

    @classmethod
    def check_images(cls, opt: Mapping[str, Any], path: str | None = None,
                     base_dir: str | os.PathLike | None = None) -> None:
        """Before training: every image at least ``gt_size`` on its shorter side (file headers); for validation /
        testing every image decodes.

        Raises:
            OptionsError: At ``<path>.gt_size``, naming the smallest image.
            UserError: Naming a file that cannot be read.
        """
        path = path or cls.__name__
        check_clean_images(cls.check_options(opt, path, base_dir), path)

    @classmethod
    def lq_channels(cls, opt: Mapping[str, Any], path: str | None = None) -> tuple[str, int]:
        """The option that sets the channel count of ``lq`` (the network's input) and that count."""
        return 'in_ch', need_choice(opt, path or cls.__name__, 'in_ch', (1, 3), default=3,
                                    fix='Write in_ch: 3 (colour) or in_ch: 1 (gray).')

    def _rng(self, index: int) -> np.random.Generator:
        if self.train:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng(index + self.seed_offset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        gt, _ = self.source.read(path, self.in_ch)
        lq = self.degrade(gt, self._rng(index), **self.params).astype(np.float32)
        if self.train:
            crops = random_crop([lq, gt], self.gt_size, type(self).__name__, f"image '{path}'")
            lq, gt = augment(crops, self.use_hflip, self.use_rot)
        lq, gt = img2tensor([np.ascontiguousarray(lq), np.ascontiguousarray(gt)], bgr2rgb=False, float32=True)
        return {'lq': lq, 'gt': gt, 'lq_path': path, 'gt_path': path}

    def __len__(self) -> int:
        return len(self.paths)
