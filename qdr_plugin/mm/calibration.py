"""QAT's calibration batches in the mmengine front: ``quant.calib_batches`` batches of the runner's training set.

A training set wrapping a basicsr dataset (:class:`~qdr_plugin.mm.data.datasets.BasicSRDataset`) is drawn exactly as
the BasicSR front draws it (:func:`qdr_plugin.data.calibration.training_calibration_batches`, ``quant.calib_size``
honoured); any other set is shuffled by a generator seeded with the run's seed, in the training batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, default_collate

from qdr_plugin.data.calibration import training_calibration_batches
from qdr_plugin.errors import UserError
from qdr_plugin.quant import QuantConfig

from .data.datasets import BasicSRDataset

__all__ = ['calibration_batches']


def calibration_batches(runner: Any, config: QuantConfig) -> Iterator[torch.Tensor]:
    """The ``lq`` calibration batches of ``runner``'s training set, on the model's device, drawn as iterated."""
    loader = runner.train_dataloader
    dataset, seed = loader.dataset, runner.seed or 0
    device = next(runner.model.parameters()).device
    if isinstance(dataset, BasicSRDataset):
        opt = {**dataset.opt, 'batch_size_per_gpu': loader.batch_size}
        yield from training_calibration_batches(opt, config.calib_batches, config.calib_size, seed, device)
        return
    if config.calib_size is not None:
        raise UserError('quant.calib_size needs a training set of type BasicSRDataset (its crop size is set there); '
                        'remove calib_size or wrap the basicsr dataset in BasicSRDataset.')
    generator = torch.Generator().manual_seed(seed)
    batches = DataLoader(dataset, batch_size=loader.batch_size, shuffle=True, generator=generator,
                         collate_fn=default_collate)
    for drawn, batch in enumerate(batches, start=1):
        yield batch['lq'].to(device)
        if drawn == config.calib_batches:
            return
