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


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every ``Conv2d -> BatchNorm2d`` pair inside ``nn.Sequential`` containers; returns how many."""
    folded = 0
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (_, first), (name, second) in zip(children, children[1:]):
            if type(first) is nn.Conv2d and isinstance(second, nn.BatchNorm2d):
                fold_conv_bn(first, second)
                setattr(module, name, nn.Identity())
                folded += 1
    return folded
