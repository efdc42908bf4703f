"""The switch from FP32 training to QAT, and the optimizer groups of the network on either side of it.

At the switch (:func:`start_qat`) the network, as it is now, becomes its own teacher (self-distillation): BatchNorm
is folded, a frozen FP32 copy is taken, and the network itself gets fake quantizers whose activation step sizes are
calibrated on training batches; every rank then takes rank 0's step sizes and teacher. The optimizer is rebuilt
afterwards over :func:`optimizer_groups`, which now holds the step sizes as a group of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qdr_plugin.core.distributed import broadcast_module
from qdr_plugin.quant import quantizer_parameters

__all__ = ['QATStart', 'freeze', 'optimizer_groups', 'start_qat']

Prepare = Callable[..., Any]
"""``prepare(net, calibration_batches=..., keep_float=True)`` returning an object with ``float_network`` and
``calibrated`` (:func:`qdr_plugin.prepare.prepare` with the network and quant options bound)."""


@dataclass
class QATStart:
    """What :func:`start_qat` made: the frozen FP32 ``teacher`` and how many activation quantizers were
    ``calibrated``."""

    teacher: nn.Module
    calibrated: int


def freeze(teacher: nn.Module) -> nn.Module:
    """``teacher`` in eval mode with no parameter requiring a gradient (returned for chaining)."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def start_qat(net: nn.Module, prepare: Prepare, calibration_batches: Iterable[torch.Tensor]) -> QATStart:
    """Quantize the bare network ``net`` in place and return its frozen FP32 teacher.

    ``prepare(net, calibration_batches=..., keep_float=True)`` folds BatchNorm, copies the float network, quantizes
    ``net`` and calibrates it on the batches (drawn as they are iterated). In a process group the ranks calibrated
    on differently augmented batches, so rank 0's network and teacher are broadcast to all.
    """
    prepared = prepare(net, calibration_batches=calibration_batches, keep_float=True)
    teacher = freeze(prepared.float_network)
    broadcast_module(net)
    broadcast_module(teacher)
    return QATStart(teacher, prepared.calibrated)


def optimizer_groups(net: nn.Module, lr: float, step_lr_mult: float = 1.0) -> list[dict[str, Any]]:
    """The parameter groups of ``net``'s optimizer: the trainable weights (the optimizer's own settings), then, once
    quantized, the quantizer step sizes with ``weight_decay = 0`` and learning rate ``lr * step_lr_mult``.

    Frozen parameters (a curriculum's later stages) are left out of the weights; a teacher is never part of ``net``.
    """
    steps = quantizer_parameters(net)
    step_ids = {id(p) for p in steps}
    weights = [p for p in net.parameters() if p.requires_grad and id(p) not in step_ids]
    groups: list[dict[str, Any]] = [{'params': weights}]
    if steps:
        groups.append({'params': steps, 'weight_decay': 0.0, 'lr': lr * step_lr_mult})
    return groups
