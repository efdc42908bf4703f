"""Keeping every rank of a process group in step: the plain-PyTorch helpers both training fronts call.

Outside an initialised process group with more than one process every helper is a no-op, so single-process training
calls them unconditionally.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

__all__ = ['broadcast_module', 'is_dist', 'sync_lmr']


def is_dist() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


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
