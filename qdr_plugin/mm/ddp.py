"""``QDRDistributedDataParallel``: mmengine's DDP wrapper that trains with the model's own QDR step.

mmengine's ``MMDistributedDataParallel.train_step`` runs ``forward`` / ``parse_losses`` / ``update_params`` itself,
which would skip the step-size projection and LMR's update. This wrapper hands the step to
:meth:`QDRRestorer.qdr_train_step <qdr_plugin.mm.model.QDRRestorer.qdr_train_step>` with its own forward (so DDP
all-reduces the gradients), and keeps the frozen teacher and LMR's weights (trained by LMR's own optimizer, identical
on every rank through :func:`qdr_plugin.core.distributed.sync_lmr`) out of DDP's gradient reduction.
"""

from __future__ import annotations

from typing import Any

import torch
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .registry import MODEL_WRAPPERS

__all__ = ['QDRDistributedDataParallel']


@MODEL_WRAPPERS.register_module()
class QDRDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` whose ``train_step`` is the QDR step (CPU / gloo or CUDA)."""

    def __init__(self, module: nn.Module, **kwargs: Any) -> None:
        if not next(module.parameters()).is_cuda:
            kwargs.pop('device_ids', None)  # the Runner passes LOCAL_RANK; a CPU module takes none
        ignored = [name for name, _ in [*module.named_parameters(), *module.named_buffers()]
                   if name.startswith(('teacher.', 'lmr.'))]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
        super().__init__(module=module, **kwargs)

    def train_step(self, data: dict, optim_wrapper: OptimWrapper) -> dict[str, torch.Tensor]:
        return self.module.qdr_train_step(data, optim_wrapper, lambda lq: self(lq, mode='tensor'))
