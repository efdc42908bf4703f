"""Rebuild the networks of a QDR checkpoint (``{'params': student, 'params_teacher': FP32 teacher}``) outside basicsr's
model classes, for tools and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from basicsr.archs import build_network
from torch import nn

from qdr_plugin.prepare import prepare
from qdr_plugin.quant import QuantConfig, fold_batchnorm, is_quantized_state_dict


def build_teacher(network_opt: Mapping[str, Any], state: Mapping[str, torch.Tensor], fold_bn: bool = True) -> nn.Module:
    """The FP32 teacher of a QDR checkpoint (``params_teacher``): a plain network, BatchNorm folded as it was when
    the teacher was snapshotted, in eval mode."""
    teacher = build_network(dict(network_opt))
    if fold_bn:
        fold_batchnorm(teacher)
    teacher.load_state_dict(state)
    return teacher.eval()


def load_networks(
    network_opt: Mapping[str, Any], quant_opt: Mapping[str, Any] | None, path: str
) -> tuple[nn.Module, nn.Module | None]:
    """``(student, teacher)`` in eval mode; the student is quantized when the checkpoint is, ``teacher`` is ``None``
    for a plain FP32 checkpoint."""
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    if 'params' not in checkpoint:
        raise ValueError(f"{path} is not a basicsr checkpoint: it has no 'params' key (keys: {list(checkpoint)}).")
    config = QuantConfig.from_options(quant_opt)
    student = build_network(dict(network_opt))
    if is_quantized_state_dict(checkpoint['params']):
        prepare(student, network_opt, config)
    student.load_state_dict(checkpoint['params'])
    teacher = None
    if 'params_teacher' in checkpoint:
        teacher = build_teacher(network_opt, checkpoint['params_teacher'], config.fold_bn)
    return student.eval(), teacher
