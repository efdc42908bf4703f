"""``QATSwitchHook``: the FP32 -> QAT switch inside mmengine's Runner, and what a QDR checkpoint needs beyond
mmengine's own contents.

* Before iteration ``fp32_warmup_iter`` (0-based, so the same update as ``QDRModel``'s 1-based
  ``fp32_warmup_iter + 1``): :meth:`QDRRestorer.start_qat <qdr_plugin.mm.model.QDRRestorer.start_qat>` on
  calibration batches (:func:`qdr_plugin.mm.calibration.calibration_batches`; their crops, flips and noise are
  drawn from the global RNGs, part of the training's random stream as in ``basicsr train``), then a new optimizer
  over the new parameter groups, new parameter schedulers advanced to the current iteration, and, in distributed
  training, a new DDP wrapper (it must all-reduce the step sizes too).
* Saving: ``qdr`` holds the RNG states, LMR's optimizer and the training record (``network_g``, ``quant``), and the
  message hub's history buffers are stored as plain lists, so that the file loads with
  ``torch.load(..., weights_only=True)`` (mmengine 0.10.7 pickles ``HistoryBuffer`` objects, which such loading
  refuses).
* Loading (``--resume`` / ``load_from``): a checkpoint of a quantized model first gives the model that structure
  (:meth:`QDRRestorer.quantize_like_checkpoint`) and a matching optimizer and schedulers; the history buffers come
  back, and the train loop gets the RNG states to restore after it has skipped the trained batches.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper

from qdr_plugin.utils.checkpoint import training_record
from qdr_plugin.utils.rng import rng_state

from .calibration import calibration_batches
from .registry import HOOKS

__all__ = ['QATSwitchHook']


def _bare(model: Any) -> Any:
    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class QATSwitchHook(Hook):
    """Switches the model to QAT at its ``fp32_warmup_iter`` and keeps checkpoints complete and safely loadable."""

    priority = 'HIGH'  # before the other hooks see the iteration

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        model = _bare(runner.model)
        if model.teacher is not None or runner.iter < model.fp32_warmup_iter:
            return
        calibrated = model.start_qat(calibration_batches(runner, model.quant_config))
        self._rebuild_optimization(runner, advance=runner.iter)
        runner.logger.info(f'QAT starts at iter {runner.iter}: {calibrated} activation quantizers calibrated '
                           f'({model.quant_config.calibration}).')

    @staticmethod
    def _rebuild_optimization(runner: Any, advance: int) -> None:
        """A new optimizer in the runner's optimizer wrapper (the constructor's groups of the model as it is now),
        new schedulers stepped ``advance`` times, and a new DDP wrapper in distributed training."""
        model = _bare(runner.model)
        if is_model_wrapper(runner.model):
            runner.model = runner.wrap_model(runner.cfg.get('model_wrapper_cfg'), model)
        fresh = runner.build_optim_wrapper(runner.cfg.optim_wrapper)
        runner.optim_wrapper.optimizer = fresh.optimizer
        if runner.param_schedulers is not None:
            runner.param_schedulers = runner.build_param_scheduler(runner.cfg.param_scheduler)
            with warnings.catch_warnings():  # stepping a scheduler before its optimizer is the point here
                warnings.simplefilter('ignore', UserWarning)
                for scheduler in runner.param_schedulers:
                    for _ in range(advance):
                        scheduler.step()

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        _bare(runner.model).teacher_scored = True  # a frozen teacher scores the same every time

    after_test_epoch = after_val_epoch

    # ------------------------------------------------------------------------------------------ checkpoints
    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        model = _bare(runner.model)
        qdr = {'rng': rng_state(), 'options': training_record(model.network_opt, model.quant_config)}
        if model.lmr is not None:
            qdr['lmr_optimizer'] = model.lmr.optimizer.state_dict()
        checkpoint['qdr'] = qdr
        hub = checkpoint.get('message_hub')
        if hub is not None:
            hub['log_scalars'] = {
                name: {'log': b.data[0].tolist(), 'count': b.data[1].tolist(), 'max_length': b.max_length}
                for name, b in hub['log_scalars'].items()
            }
            info = {k: _plain(v) for k, v in hub['runtime_info'].items()}
            hub['runtime_info'] = {k: v for k, v in info.items() if v is not _UNSAFE}

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        model = _bare(runner.model)
        state = checkpoint.get('state_dict', {})
        if model.teacher is None and any(k.startswith('teacher.') for k in state):
            model.quantize_like_checkpoint()
            if isinstance(runner.optim_wrapper, OptimWrapper):  # built: training (not test)
                self._rebuild_optimization(runner, advance=0)
        hub = checkpoint.get('message_hub')
        if hub is not None:
            hub['log_scalars'] = {
                name: HistoryBuffer(v['log'], v['count'], v['max_length']) if isinstance(v, dict) else v
                for name, v in hub['log_scalars'].items()
            }
        qdr = checkpoint.get('qdr', {})
        if model.lmr is not None and 'lmr_optimizer' in qdr:
            model.lmr.optimizer.load_state_dict(qdr['lmr_optimizer'])
        loop = getattr(runner, '_train_loop', None)
        if 'rng' in qdr and hasattr(loop, 'rng_after_skip'):
            loop.rng_after_skip = qdr['rng']


_UNSAFE = object()
"""What :func:`_plain` returns for a value ``torch.load(..., weights_only=True)`` would refuse."""


def _plain(value: Any) -> Any:
    """``value`` made of the types ``torch.load(..., weights_only=True)`` accepts: numpy scalars as Python numbers,
    containers converted item by item; :data:`_UNSAFE` if anything else is in it."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        plain = {k: _plain(v) for k, v in items}
        if any(v is _UNSAFE for v in plain.values()) or not all(isinstance(k, (str, int)) for k in plain):
            return _UNSAFE
        return plain if isinstance(value, dict) else type(value)(plain.values())
    return _UNSAFE
