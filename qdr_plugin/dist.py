"""Multi-process (DistributedDataParallel) training on GPUs (NCCL) and on the CPU (gloo).

basicsr 1.4.2's ``init_dist`` always calls ``torch.cuda.set_device`` and defaults to NCCL, so ``--launcher pytorch``
fails without CUDA. :func:`init_dist` is a drop-in replacement; :func:`use_in_basicsr` makes
``basicsr.utils.options.parse_options`` call it (the single patch point, applied by ``qdr_plugin.train``).

    torchrun --nproc_per_node=<gpus or processes> -m qdr_plugin train -opt X.yml --launcher pytorch

:func:`wrap_ddp` wraps ``QDRModel``'s network; :func:`broadcast_module` and :func:`sync_lmr` (from
:mod:`qdr_plugin.core.distributed`, shared with the mmengine front) keep every rank's quantized network, teacher and
LMR weights identical.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from basicsr.utils import dist_util as _basicsr_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from qdr_plugin.core.distributed import broadcast_module, is_dist, sync_lmr

__all__ = ['broadcast_module', 'default_backend', 'init_dist', 'is_dist', 'sync_lmr', 'use_in_basicsr', 'wrap_ddp']


def default_backend() -> str:
    """``'nccl'`` when CUDA is available, else ``'gloo'``."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def init_dist(launcher: str, backend: str | None = None, **kwargs) -> None:
    """basicsr's ``init_dist(launcher, backend, **kwargs)`` that also works without CUDA.

    ``pytorch`` (torchrun / ``torch.distributed.run``): the process group comes from the environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); ``backend`` defaults to :func:`default_backend`, and the CUDA
    device (only with CUDA) is ``LOCAL_RANK`` (falls back to ``RANK % device count``). ``slurm`` is basicsr's
    (needs CUDA; ``backend`` defaults to NCCL there).
    """
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    if launcher == 'pytorch':
        backend = backend or default_backend()
        if torch.cuda.is_available():
            local_rank = int(os.environ.get('LOCAL_RANK', int(os.environ.get('RANK', 0)) % torch.cuda.device_count()))
            torch.cuda.set_device(local_rank)
        elif backend == 'nccl':
            raise RuntimeError('init_dist: the NCCL backend needs CUDA, which is not available; use gloo.')
        dist.init_process_group(backend=backend, **kwargs)
    elif launcher == 'slurm':
        _basicsr_dist._init_dist_slurm(backend or 'nccl', **kwargs)
    else:
        raise ValueError(f'Invalid launcher type: {launcher}')


def use_in_basicsr() -> None:
    """Make basicsr's ``parse_options`` call :func:`init_dist` (``basicsr.utils.options`` imported the name, so the
    attribute there is rebound). Idempotent."""
    from basicsr.utils import options

    options.init_dist = init_dist


def wrap_ddp(net: nn.Module, find_unused_parameters: bool = False) -> DistributedDataParallel:
    """``DistributedDataParallel(net)`` on the current CUDA device, or on the CPU (no ``device_ids``) without CUDA
    or when ``net`` is on the CPU. Wrapping broadcasts rank 0's parameters and buffers to every rank."""
    on_cuda = torch.cuda.is_available() and next(net.parameters()).is_cuda
    device_ids = [torch.cuda.current_device()] if on_cuda else None
    return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
