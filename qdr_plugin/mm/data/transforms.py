"""mmcv-style transforms for restoration pipelines: a ``results`` dict in, the same dict out.

Images travel as ``H x W x C`` float32 arrays in [0, 1] under ``'gt'`` / ``'lq'`` until :class:`PackInputs` turns
them into ``C x H x W`` tensors. Random draws use the global RNGs in the order of the plugin's basicsr datasets
(crop and flips from Python's ``random``, training noise from torch), so a pipeline

    LoadImage(key='gt') -> PairedRandomCrop -> Flip -> AddGaussianNoise -> PackInputs

draws what ``GaussianNoiseDataset`` draws for the same image. Synthetic degradations (haze, rain, low light) reuse
the plugin's datasets' ``degrade`` functions (:class:`SyntheticDegradation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from basicsr.data.transforms import augment
from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from mmcv.transforms import BaseTransform

from qdr_plugin.data.dataset_options import random_crop
from qdr_plugin.data.gaussian_noise_dataset import add_validation_noise
from qdr_plugin.data.image_source import decode_image

from ..registry import TRANSFORMS

__all__ = ['AddGaussianNoise', 'Flip', 'LoadImage', 'PackInputs', 'PairedRandomCrop', 'SyntheticDegradation']


@TRANSFORMS.register_module()
class LoadImage(BaseTransform):
    """Read ``results[f'{key}_path']`` into ``results[key]`` as the plugin's datasets read it (``channels`` 1: gray,
    3: colour; :func:`qdr_plugin.data.image_source.decode_image`)."""

    def __init__(self, key: str = 'gt', channels: int = 3) -> None:
        self.key, self.channels = key, channels

    def transform(self, results: dict) -> dict:
        path = results[f'{self.key}_path']
        with open(path, 'rb') as file:
            img, _ = decode_image(file.read(), path, self.channels, 'LoadImage')
        results[self.key] = img
        return results


@TRANSFORMS.register_module()
class PairedRandomCrop(BaseTransform):
    """The same random ``gt_size`` square crop of every image in ``keys`` (equal sizes: scale 1)."""

    def __init__(self, gt_size: int, keys: Sequence[str] = ('gt',)) -> None:
        self.gt_size, self.keys = gt_size, tuple(keys)

    def transform(self, results: dict) -> dict:
        present = [k for k in self.keys if k in results]
        crops = random_crop([results[k] for k in present], self.gt_size, 'PairedRandomCrop',
                            f"image '{results.get('key', '?')}'")
        results.update(zip(present, crops))
        return results


@TRANSFORMS.register_module()
class Flip(BaseTransform):
    """basicsr's ``augment``: the same random horizontal flip / vertical flip + transpose of every image in
    ``keys``."""

    def __init__(self, keys: Sequence[str] = ('gt',), hflip: bool = True, rotation: bool = True) -> None:
        self.keys, self.hflip, self.rotation = tuple(keys), hflip, rotation

    def transform(self, results: dict) -> dict:
        present = [k for k in self.keys if k in results]
        images = augment([results[k] for k in present], self.hflip, self.rotation)
        images = images if isinstance(images, list) else [images]
        results.update(zip(present, images))
        return results


@TRANSFORMS.register_module()
class AddGaussianNoise(BaseTransform):
    """``lq = gt + n``, ``n ~ N(0, (sigma / 255)^2)``, not clipped.

    ``seeded=False`` (training): ``n`` is ``torch.randn_like`` of the ``C x H x W`` tensor, a fresh draw each time;
    ``seeded=True`` (validation): the plugin's fixed noise of image ``results['index'] + seed_offset``
    (:func:`qdr_plugin.data.gaussian_noise_dataset.add_validation_noise`), the same in every run and tool.
    """

    def __init__(self, sigma: float, seeded: bool = False, seed_offset: int = 0) -> None:
        self.sigma, self.seeded, self.seed_offset = float(sigma), seeded, seed_offset

    def transform(self, results: dict) -> dict:
        gt = results['gt']
        if self.seeded:
            plane = gt[..., 0] if gt.shape[-1] == 1 else gt
            results['lq'] = add_validation_noise(plane, self.sigma, results['index'] + self.seed_offset).reshape(
                gt.shape).astype(np.float32)
        else:  # drawn like GaussianNoiseDataset: randn_like of the C x H x W view keeps a flipped crop's strides
            gt_chw = img2tensor(gt, bgr2rgb=False, float32=True)
            lq = gt_chw + torch.randn_like(gt_chw) * (self.sigma / 255.0)
            results['lq'] = lq.permute(1, 2, 0).numpy()
        return results


@TRANSFORMS.register_module()
class SyntheticDegradation(BaseTransform):
    """``lq = degrade(gt)`` with the ``degrade`` function of a synthetic-pair dataset of the plugin (``dataset``:
    ``'HazeDataset'``, ``'RainDataset'``, ``'LowLightDataset'``), its ``params`` as in that dataset's options.

    ``seeded=False``: a generator seeded from torch's RNG per image; ``True``: seeded with ``results['index']``.
    """

    def __init__(self, dataset: str, seeded: bool = False, **params: Any) -> None:
        self.dataset_cls = DATASET_REGISTRY.get(dataset)
        self.seeded, self.params = seeded, self.dataset_cls.check_parameters(params, f'SyntheticDegradation({dataset})')

    def transform(self, results: dict) -> dict:
        if self.seeded:
            rng = np.random.default_rng(results['index'])
        else:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        results['lq'] = self.dataset_cls.degrade(results['gt'], rng, **self.params).astype(np.float32)
        return results


@TRANSFORMS.register_module()
class PackInputs(BaseTransform):
    """``lq`` and ``gt`` as ``C x H x W`` float32 tensors (channel order kept, as the plugin's datasets), with
    ``key``; nothing else."""

    def __init__(self, keys: Sequence[str] = ('lq', 'gt')) -> None:
        self.keys = tuple(keys)

    def transform(self, results: dict) -> dict:
        packed = {k: img2tensor(np.ascontiguousarray(results[k]), bgr2rgb=False, float32=True)
                  for k in self.keys if k in results}
        packed['key'] = results.get('key', '')
        return packed
