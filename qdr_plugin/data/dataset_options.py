"""basicsr's generic dataset keys (the ones basicsr sets or reads for every dataset) and their rules.

A dataset's own ``check_options`` refuses keys that are neither its own nor in :data:`GENERIC_DATASET_KEYS`
(:func:`check_dataset_keys`) and reads ``phase`` through :func:`training_phase`; the pre-flight checker applies
:func:`check_loader_options` (keys basicsr's ``build_dataloader`` reads) to every dataset. :func:`check_crop_fits`
is the rule of a training crop against the images, :func:`check_clean_images` the image check of a dataset of clean
images, and :func:`random_crop` the training crop itself.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from qdr_plugin.errors import UserError
from qdr_plugin.option_rules import OptionsError, check_keys, need_bool, need_int, need_number

from .image_source import ImageSource

__all__ = ['GENERIC_DATASET_KEYS', 'PHASES', 'check_clean_images', 'check_crop_fits', 'check_dataset_keys',
           'check_loader_options', 'random_crop', 'training_phase']

GENERIC_DATASET_KEYS = (
    'name', 'type', 'phase', 'num_worker_per_gpu', 'batch_size_per_gpu', 'dataset_enlarge_ratio', 'prefetch_mode',
    'num_prefetch_queue', 'pin_memory', 'persistent_workers', 'use_shuffle', 'filename_tmpl', 'scale',
)
"""Keys of a ``datasets`` entry that basicsr sets (``phase``; ``scale`` from the top level) or reads itself."""

PHASES = ('train', 'val', 'test')
"""The phases basicsr gives datasets (the ``datasets`` key up to its first ``_``)."""


def check_dataset_keys(opt: Mapping[str, Any], path: str, own_keys: Iterable[str]) -> None:
    """Every key of the dataset block ``opt`` must be one of the dataset's ``own_keys`` or a generic one."""
    check_keys(opt, path, [*own_keys, *GENERIC_DATASET_KEYS])


def training_phase(opt: Mapping[str, Any], path: str) -> bool:
    """``opt['phase'] == 'train'``; the phase must be one of :data:`PHASES`."""
    phase = opt.get('phase')
    if phase not in PHASES:
        raise OptionsError(f'{path}.phase', "must be 'train', 'val' or 'test'", phase,
                           'BasicSR sets it from the datasets key (train / val*); set it yourself when building by '
                           'hand.')
    return phase == 'train'


def check_loader_options(opt: Mapping[str, Any], path: str, phase: str) -> None:
    """The keys basicsr's ``build_dataloader`` reads: batch size and workers (required for training), the
    enlarge ratio, the loader switches and ``prefetch_mode``."""
    for key in ('pin_memory', 'persistent_workers', 'use_shuffle'):
        need_bool(opt, path, key)
    if phase == 'train':
        need_int(opt, path, 'batch_size_per_gpu', 1, required=True, example='8')
        need_int(opt, path, 'num_worker_per_gpu', 0, required=True, example='0')
        need_number(opt, path, 'dataset_enlarge_ratio', above=True, example='1')
    prefetch = opt.get('prefetch_mode')
    if prefetch not in (None, 'cpu', 'cuda'):
        raise OptionsError(f'{path}.prefetch_mode', "must be ~, 'cpu' or 'cuda'", prefetch, 'Write prefetch_mode: ~.')


def check_crop_fits(source: ImageSource, size: int, key_path: str, value: Any = None) -> None:
    """Every image of ``source`` must be at least ``size`` on its shorter side (the random training crop), read from
    the file headers; raises :class:`OptionsError` at ``key_path`` (with ``value``, default ``size``) naming the
    smallest image."""
    smallest = source.smallest()
    if smallest is not None and min(smallest[1:]) < size:
        name, height, width = smallest
        raise OptionsError(key_path, f"is larger than image '{source.describe(name)}' ({height}x{width}, HxW), "
                           f'the smallest of {source.key}', size if value is None else value,
                           f'Lower it to at most {min(height, width)}, or remove the smaller images.')


def check_clean_images(checked: Mapping[str, Any], path: str) -> None:
    """The image check of a dataset that reads one folder of clean images, from the values its ``check_options``
    returned (``train``, ``source``, ``gt_size``, ``in_ch``): for training, every image at least ``gt_size`` on its
    shorter side (file headers only); for validation / testing, every image decodes."""
    if checked['train']:
        check_crop_fits(checked['source'], checked['gt_size'], f'{path}.gt_size')
    else:
        checked['source'].check_decodable(checked['in_ch'])


def random_crop(images: Sequence[np.ndarray], size: int, owner: str, what: str) -> list[np.ndarray]:
    """The same random ``size`` x ``size`` crop of equally sized ``H x W x C`` images, placed with Python's
    ``random`` (which basicsr seeds).

    Raises:
        UserError: ``{owner}: {what} is HxW, smaller than gt_size``, when the images are smaller than the crop.
    """
    h, w = images[0].shape[:2]
    if h < size or w < size:
        raise UserError(f'{owner}: {what} is {h}x{w} (HxW), smaller than gt_size {size}x{size}; lower gt_size or '
                        'remove the image.')
    top, left = random.randint(0, h - size), random.randint(0, w - size)
    return [img[top:top + size, left:left + size] for img in images]
