"""``QDROptimWrapperConstructor``: the optimizer over the student's weights and step sizes, as the BasicSR front's.

The groups are :func:`qdr_plugin.core.optimizer_groups` of the student alone (the frozen teacher and LMR's weights,
which LMR trains with its own optimizer, are never in it): the weights with ``optimizer``'s settings, and, once the
network is quantized, the step sizes with no weight decay and learning rate ``lr * model.train.step_lr_mult``.
"""

from __future__ import annotations

from copy import deepcopy

from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from qdr_plugin.core import optimizer_groups

from .registry import OPTIM_WRAPPER_CONSTRUCTORS

__all__ = ['QDROptimWrapperConstructor']


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class QDROptimWrapperConstructor:
    """Builds ``optim_wrapper`` (``type`` default ``OptimWrapper``, ``optimizer=dict(type=..., lr=...)``) for a
    :class:`~qdr_plugin.mm.model.QDRRestorer`; ``paramwise_cfg`` is not supported (the groups are QDR's)."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        if paramwise_cfg:
            raise ValueError('QDROptimWrapperConstructor: paramwise_cfg is not supported (the parameter groups are '
                             "QDR's: weights, and step sizes without weight decay); remove it.")
        self.optim_wrapper_cfg = deepcopy(optim_wrapper_cfg)

    def __call__(self, model: nn.Module) -> OptimWrapper:
        model = getattr(model, 'module', model)
        cfg = deepcopy(self.optim_wrapper_cfg)
        cfg.setdefault('type', 'OptimWrapper')
        optimizer_cfg = cfg.pop('optimizer')
        optimizer_cfg['params'] = optimizer_groups(model.net, optimizer_cfg['lr'], model.step_lr_mult)
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        return OPTIM_WRAPPERS.build(cfg, default_args={'optimizer': optimizer})
