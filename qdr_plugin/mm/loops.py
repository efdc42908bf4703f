"""``QDRIterBasedTrainLoop``: mmengine's iteration-based loop that resumes exactly, validates without touching
the training's random stream, and draws basicsr's data order when asked to.

On resume mmengine's loop draws (and drops) the batches already trained, which moves the global RNGs; this loop then
restores the RNG states saved with the checkpoint (set by :class:`~qdr_plugin.mm.hooks.QATSwitchHook` on loading), so
the next batch, its augmentation and noise are the ones an uninterrupted run draws. Validation runs inside
:func:`~qdr_plugin.utils.rng.rng_preserved` (its data loader seeds itself from the global RNG), as ``basicsr train``
validates.

A training loader whose sampler is basicsr's ``EnlargedSampler`` (:mod:`qdr_plugin.mm.data.basicsr_order`) is
iterated epoch by epoch as ``basicsr train`` iterates it (:class:`~qdr_plugin.mm.data.basicsr_order.BasicSREpochs`);
the iterator mmengine's loop creates when it is built stands for the one basicsr's ``CPUPrefetcher`` creates before
the first epoch (each draws the loader's base seed from torch's RNG), and is dropped unused as basicsr drops it.
"""

from __future__ import annotations

from typing import Any

from basicsr.data.data_sampler import EnlargedSampler
from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from qdr_plugin.utils.rng import rng_preserved, set_rng_state

from .data.basicsr_order import BasicSREpochs
from .registry import LOOPS

__all__ = ['QDRIterBasedTrainLoop']


@LOOPS.register_module()
class QDRIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop`` with exact resume, RNG-neutral validation and, with an
    ``EnlargedSampler``, basicsr's data order."""

    rng_after_skip: dict[str, Any] | None = None
    """The RNG states to restore once the trained batches are skipped (``None``: a fresh run)."""

    def __init__(self, runner: Any, dataloader: Any, max_iters: int, **kwargs: Any) -> None:
        super().__init__(runner, dataloader, max_iters, **kwargs)
        if isinstance(self.dataloader.sampler, EnlargedSampler):
            diff_rank_seed = (runner.cfg.get('randomness') or {}).get('diff_rank_seed', False)
            seed = runner.seed - (get_rank() if diff_rank_seed else 0)  # the seed before its rank offset
            self.dataloader_iterator = BasicSREpochs(self.dataloader, seed)

    def run(self) -> Any:
        self.runner.call_hook('before_train')
        self.runner.call_hook('before_train_epoch')
        if self._iter > 0:
            print_log(f'Advance dataloader {self._iter} steps to skip data that has already been trained',
                      logger='current')
            for _ in range(self._iter):
                next(self.dataloader_iterator)
            if self.rng_after_skip is not None:
                set_rng_state(self.rng_after_skip)
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            self.run_iter(next(self.dataloader_iterator))
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)):
                with rng_preserved():
                    self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model
