"""The search's score: mean PSNR of a network's 8-bit rounded output against the 8-bit ground truth (the protocol of
docs/evaluation.md, whole images, no border crop), on image pairs held in memory."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def psnr_8bit(output: torch.Tensor, gt: torch.Tensor) -> float:
    """``10 log10(255^2 / MSE)`` of ``round(255 clamp(output, 0, 1))`` against ``round(255 gt)`` (one image)."""
    out = (output.clamp(0, 1) * 255).round().double()
    ref = (gt.clamp(0, 1) * 255).round().double()
    mse = float(((out - ref) ** 2).mean())
    return float('inf') if mse == 0 else 10 * math.log10(255.0**2 / mse)


@torch.no_grad()
def mean_psnr(net: nn.Module, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean :func:`psnr_8bit` of ``net`` (eval mode) over ``(lq, gt)`` pairs of ``C x H x W`` tensors."""
    net.eval()
    return sum(psnr_8bit(net(lq[None]), gt[None]) for lq, gt in pairs) / len(pairs)
