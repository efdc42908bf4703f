r"""Fold BatchNorm into the preceding convolution.

For ``y = BN(conv(x))`` in inference mode, with :math:`\gamma, \beta, \mu, \sigma^2, \epsilon` of the BatchNorm:

.. math::

    W'_c = W_c \frac{\gamma_c}{\sqrt{\sigma_c^2 + \epsilon}}, \qquad
    b'_c = (b_c - \mu_c) \frac{\gamma_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c

The folded convolution replaces the pair; the BatchNorm becomes ``nn.Identity`` so module names stay stable.
Pairs are found as consecutive children of an ``nn.Sequential`` (where every arch that uses BatchNorm in basicsr
and in DnCNN keeps them).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` into ``conv`` in place (``conv`` gains a bias if it had none)."""
    if not bn.track_running_stats or bn.running_var is None:
        raise ValueError('BatchNorm without running statistics cannot be folded.')
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    if conv.bias is None:
        conv.bias = nn.Parameter(shift.clone())
    else:
        conv.bias.mul_(scale).add_(shift)


def _conv_bn_pairs(model: nn.Module):
    """``(sequential, conv, bn_child_name, bn_full_name)`` for every ``Conv2d -> BatchNorm2d`` pair in a Sequential."""
    for seq_name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, first), (name, second) in zip(children, children[1:]):
            if type(first) is nn.Conv2d and isinstance(second, nn.BatchNorm2d):
                yield module, first, name, f'{seq_name}.{name}' if seq_name else name


def foldable_batchnorms(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers :func:`fold_batchnorm` would fold."""
    return [full_name for *_, full_name in _conv_bn_pairs(model)]


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``Conv2d -> BatchNorm2d`` pair inside ``nn.Sequential`` containers; returns how many."""
    pairs = list(_conv_bn_pairs(model))
    for sequential, conv, bn_name, _ in pairs:
        fold_conv_bn(conv, getattr(sequential, bn_name))
        setattr(sequential, bn_name, nn.Identity())
    return len(pairs)
