"""BasicSR's data order in the mmengine front: the batches, crops, flips and noise ``basicsr train`` draws.

A training data loader with ``sampler=dict(type='EnlargedSampler', ratio=R)`` (``R`` the YAML's
``dataset_enlarge_ratio``), ``drop_last=True`` and a :class:`~qdr_plugin.mm.data.datasets.BasicSRDataset` gives,
with the same seed, the batches of the YAML run, in its order:

* :class:`EnlargedSampler` is basicsr's sampler (``basicsr.data.data_sampler.EnlargedSampler``): each epoch a
  permutation of ``len(dataset) * R`` indices seeded with the epoch number, this process's share of it;
* :class:`BasicSREpochs` iterates the loader as basicsr's training loop does: a new iterator each epoch after
  ``set_epoch`` (its creation draws the loader's base seed from torch's global RNG), to the epoch's last full
  batch, and the data-loader workers seeded by basicsr's ``worker_init_fn`` with the run's seed.

:class:`~qdr_plugin.mm.loops.QDRIterBasedTrainLoop` uses :class:`BasicSREpochs` when the loader's sampler is an
``EnlargedSampler``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from basicsr.data import worker_init_fn
from basicsr.data.data_sampler import EnlargedSampler as BasicSREnlargedSampler
from mmengine.dist import get_dist_info
from torch.utils.data import DataLoader, Dataset

from ..registry import DATA_SAMPLERS

__all__ = ['BasicSREpochs', 'EnlargedSampler']


@DATA_SAMPLERS.register_module()
class EnlargedSampler(BasicSREnlargedSampler):
    """basicsr's ``EnlargedSampler`` built as mmengine builds samplers (the process group's size and rank taken from
    mmengine).

    Args:
        dataset: the training set.
        ratio: how many times each image is drawn per epoch (the YAML's ``dataset_enlarge_ratio``).
        seed: given by mmengine's Runner and unused: basicsr's order depends on the epoch number only.
    """

    def __init__(self, dataset: Dataset, ratio: int = 1, seed: int | None = None) -> None:
        rank, world_size = get_dist_info()
        super().__init__(dataset, world_size, rank, ratio)


class BasicSREpochs(Iterator):
    """The batches of ``dataloader`` without end, epoch after epoch as basicsr's training loop draws them.

    Epoch ``e`` calls ``dataloader.sampler.set_epoch(e)`` and iterates a new iterator of the loader to its end. The
    loader's ``worker_init_fn`` becomes basicsr's (``num_workers * rank + worker_id + seed`` seeds python's and
    numpy's RNGs in each worker; torch's keeps the loader's per-worker seed).

    Args:
        dataloader: a loader whose sampler has ``set_epoch``.
        seed: the run's seed without a rank offset, as the YAML's ``manual_seed``.
    """

    def __init__(self, dataloader: DataLoader, seed: int) -> None:
        rank, _ = get_dist_info()
        dataloader.worker_init_fn = partial(worker_init_fn, num_workers=dataloader.num_workers, rank=rank, seed=seed)
        self.dataloader, self.epoch = dataloader, -1
        self.iterator: Iterator[Any] = iter(())

    def __next__(self) -> Any:
        batch = next(self.iterator, None)
        if batch is None:  # the epoch is over (or none has begun): the next one, on a new iterator
            self.epoch += 1
            self.dataloader.sampler.set_epoch(self.epoch)
            self.iterator = iter(self.dataloader)
            batch = next(self.iterator, None)
            if batch is None:
                raise RuntimeError(f'the training data loader gives no batch in epoch {self.epoch}: fewer samples '
                                   'than the batch size, with drop_last=True.')
        return batch
