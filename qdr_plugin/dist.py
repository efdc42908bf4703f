"""Multi-process (DistributedDataParallel) training on GPUs (NCCL) and on the CPU (gloo).

basicsr 1.4.2's ``init_dist`` always calls ``torch.cuda.set_device`` and defaults to NCCL, so ``--launcher pytorch``
fails without CUDA. :func:`init_dist` is a drop-in replacement; :func:`use_in_basicsr` makes
``basicsr.utils.options.parse_options`` call it (the single patch point, applied by ``qdr_plugin.train``).

    torchrun --nproc_per_node=<gpus or processes> -m qdr_plugin train -opt X.yml --launcher pytorch

The helpers below (:func:`wrap_ddp`, :func:`broadcast_module`, :func:`sync_lmr`) are what ``QDRModel`` needs to keep
every rank's quantized network, teacher and LMR weights identical.
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from basicsr.utils import dist_util as _basicsr_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

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


def is_dist() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def wrap_ddp(net: nn.Module, find_unused_parameters: bool = False) -> DistributedDataParallel:
    """``DistributedDataParallel(net)`` on the current CUDA device, or on the CPU (no ``device_ids``) without CUDA
    or when ``net`` is on the CPU. Wrapping broadcasts rank 0's parameters and buffers to every rank."""
    on_cuda = torch.cuda.is_available() and next(net.parameters()).is_cuda
    device_ids = [torch.cuda.current_device()] if on_cuda else None
    return DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank ``src``'s (no-op outside a process group)."""
    if not is_dist():
        return
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src)


def _all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    device = torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else torch.device('cpu')
    reduced = tensor.detach().to(device=device, dtype=torch.float64).clone()
    dist.all_reduce(reduced)
    return (reduced / dist.get_world_size()).to(tensor.device, tensor.dtype)


@torch.no_grad()
def sync_lmr(lmr: nn.Module) -> None:
    """Make ``lmr.step()`` compute the same update on every rank (call it just before; no-op outside a group).

    ``gradnorm``: each rank measured the gradient norms at its own bottleneck (``g_rec``, ``g_kd``); they are
    averaged over the ranks, and the stored bottleneck gradients are replaced by identical 2-element stand-ins with
    exactly those norms (``step`` only uses their norms). ``uncertainty``: the gradient of the log-weights (not part
    of the DDP network, so not all-reduced by DDP) is averaged.
    """
    if not is_dist():
        return
    if lmr.type == 'uncertainty':
        grad = lmr.log_weights.grad
        if grad is not None:
            grad.copy_(_all_reduce_mean(grad))
        return
    kd_grad, feature_grad = lmr._kd_grad, lmr._feature_grad
    missing = torch.tensor(float(kd_grad is None or feature_grad is None))
    if float(_all_reduce_mean(missing)) > 0:  # every rank must take the same branch in step()
        lmr._kd_grad = lmr._feature_grad = None
        return
    w = lmr.weights
    g_kd = kd_grad.norm()
    g_rec = ((feature_grad - w[1] * kd_grad) / w[0]).norm()
    g_rec, g_kd = _all_reduce_mean(torch.stack([g_rec, g_kd]).cpu()).tolist()
    if not (math.isfinite(g_rec) and math.isfinite(g_kd)):
        g_rec = g_kd = float('nan')  # step() then skips the update on every rank
    kd = torch.tensor([g_kd, 0.0], dtype=w.dtype)
    rec = torch.tensor([0.0, g_rec], dtype=w.dtype)
    lmr._kd_grad = kd
    lmr._feature_grad = w[1] * kd + w[0] * rec
