"""Calibration inputs: noisy inputs (``lq``) drawn from the options' training set (a ``datasets: train:`` block).

Two samplers, one dataset (:func:`calibration_dataset`, the training set with ``gt_size`` set to the calibration
crop side):

:func:`training_calibration_batches`
    QAT's start (``QDRModel``): the first ``count`` batches of a shuffled ``DataLoader`` over the training set, in
    its batch size, the order from a generator seeded with ``manual_seed``. Crops, flips and noise come from the
    global RNGs, so these draws are part of the training's random stream: the step sizes of every QDR run, and
    the RNG states its training continues with, depend on them.
:func:`calibration_inputs`
    Everything outside training (``basicsr ptq``, the per-layer sensitivity of ``basicsr bench``, the benchmark
    scripts): ``count`` single inputs under a fixed seed, the global RNGs restored afterwards, so the same crops
    come out whatever ran before and no other random stream is touched.

They stay two because either one in the other's place would change recorded numbers: the training sampler would
make PTQ depend on what ran before it, the seeded one would change every trained QDR network.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from copy import deepcopy
from typing import Any

import numpy as np
import torch
from basicsr.data import build_dataset

from qdr_plugin.utils.rng import rng_preserved

CALIBRATION_SEED = 0
"""The seed of :func:`calibration_inputs` (python, numpy and torch, and the order of the images)."""

__all__ = ['CALIBRATION_SEED', 'calibration_dataset', 'calibration_inputs', 'training_calibration_batches']


def calibration_dataset(dataset_opt: Mapping[str, Any], size: int | None = None) -> torch.utils.data.Dataset:
    """The training dataset of ``dataset_opt`` (a copy: the options are left as they are; ``phase`` defaults to
    ``'train'``), its crops of side ``size`` when given (``gt_size``). ``ValueError`` if it holds no image."""
    opt = deepcopy(dict(dataset_opt))
    opt.setdefault('phase', 'train')
    opt.setdefault('name', 'calibration')
    if size is not None:
        opt['gt_size'] = int(size)
    dataset = build_dataset(opt)
    if len(dataset) == 0:
        raise ValueError(f"the calibration dataset '{opt['name']}' is empty.")
    return dataset


def training_calibration_batches(
    dataset_opt: Mapping[str, Any], count: int, size: int | None = None, seed: int = 0,
    device: torch.device | str = 'cpu',
) -> Iterator[torch.Tensor]:
    """The first ``count`` ``lq`` batches (``batch_size_per_gpu`` each, on ``device``) of a ``DataLoader`` that
    shuffles :func:`calibration_dataset` with a ``torch.Generator`` seeded with ``seed``.

    A generator: the dataset is built and the batches drawn (from the global RNGs) only as it is iterated, and no
    batch is drawn past the ``count``-th.
    """
    dataset = calibration_dataset(dataset_opt, size)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=dataset_opt['batch_size_per_gpu'], shuffle=True, generator=generator, drop_last=False
    )
    for drawn, batch in enumerate(loader, start=1):
        yield batch['lq'].to(device)
        if drawn == count:
            return


def calibration_inputs(dataset_opt: Mapping[str, Any], count: int, size: int | None = None) -> list[np.ndarray]:
    """``count`` noisy inputs, each 1 x C x H x W float32, from :func:`calibration_dataset` (``size`` overrides
    ``gt_size``).

    Deterministic: python, numpy and torch are seeded with :data:`CALIBRATION_SEED` before drawing (their global
    states are restored afterwards), images are taken in a seeded random order, cycling when ``count`` exceeds the
    set.
    """
    if count < 1:
        raise ValueError(f'the number of calibration images must be >= 1, got {count}.')
    dataset = calibration_dataset(dataset_opt, size)
    with rng_preserved():
        random.seed(CALIBRATION_SEED)
        np.random.seed(CALIBRATION_SEED)
        torch.manual_seed(CALIBRATION_SEED)
        order = np.random.default_rng(CALIBRATION_SEED).permutation(len(dataset))
        arrays = []
        for i in range(count):
            lq = dataset[int(order[i % len(order)])]['lq']
            lq = lq.numpy() if isinstance(lq, torch.Tensor) else np.asarray(lq)
            arrays.append(np.ascontiguousarray(lq[None] if lq.ndim == 3 else lq, dtype=np.float32))
    return arrays
