"""Parameter and multiply-accumulate (MAC) counts of a network, and the memory a training run of it needs.

:func:`estimate_training_memory` is what the pre-flight check compares with :func:`available_memory` before a
training run starts: it runs the network once on the ``meta`` device (shapes only: no memory, no compute), so it
also sizes a network that would not fit.
"""

from __future__ import annotations

import os
from copy import deepcopy
from dataclasses import dataclass

import torch
from torch import nn

from qdr_plugin.quant import fold_batchnorm
from qdr_plugin.quant.modules import FLOAT_TO_QUANT

__all__ = [
    'ACTIVATION_FACTOR', 'QUANTIZER_FACTOR', 'RUN_OVERHEAD', 'MemoryEstimate', 'available_memory', 'count_macs',
    'count_parameters', 'estimate_training_memory', 'quantized_input_bytes', 'saved_activation_bytes',
]

ACTIVATION_FACTOR = 1.5
"""Peak activation memory of a training step as a multiple of the tensors autograd saves in its forward pass: the
backward pass allocates gradients on top of them (measured, FP32 / QAT: DnCNN 0.95x / 1.03x, the EFM 1.3x / 1.3x,
EDSR 1.8x / 1.5x)."""

QUANTIZER_FACTOR = 1.25
"""Bytes fake quantization adds to the saved tensors, as a multiple of the inputs of the layers it quantizes (each
quantizer keeps its float input beside the quantized copy the layer keeps; measured 1.0x on basicsr's archs, 1.22x
on the EFM)."""

RUN_OVERHEAD = 256 * 2**20
"""Bytes a training run adds besides the network's (data loading, the model's set-up, logging): a tiny run peaks
170 MiB above the process that has just imported torch, basicsr and the plugin."""

_STATE_COPIES = {False: 4, True: 6}
"""Copies of the parameters a training step holds: weights, gradients and Adam's two moments; with QAT also the
FP32 teacher and the fake-quantized weights autograd keeps."""

_CGROUP_LIMITS = (('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'),
                  ('/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory/memory.usage_in_bytes'))


def count_parameters(model: nn.Module) -> int:
    """Number of weights and biases (quantizer step sizes excluded)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.endswith(('.step', '.zero_point')))


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass on a zero tensor of ``input_shape``: convolutions, transposed convolutions, linear."""
    total = 0

    def conv_hook(module: nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.weight[0].numel()  # (C_in / groups) * kH * kW
        total += output.numel() * kernel

    def deconv_hook(module: nn.ConvTranspose2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += inputs[0].numel() * module.weight[0].numel()  # each input element scatters C_out*kH*kW/groups

    def linear_hook(module: nn.Linear, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel() * module.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(deconv_hook))
        elif isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total


def saved_activation_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of one training-mode forward pass of ``model`` on
    ``example`` (each storage once, the parameters not counted). On the ``meta`` device it costs neither memory
    nor compute."""
    params = {id(p) for p in model.parameters()}
    saved: dict[int, torch.Tensor] = {}  # the tensors themselves are kept, so that their ids stay unique

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        base = tensor if tensor._base is None else tensor._base
        if id(tensor) not in params and id(base) not in params:
            saved[id(base)] = base
        return tensor

    was_training = model.training
    model.train()
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(example)
    finally:
        model.train(was_training)
    return sum(t.numel() * t.element_size() for t in saved.values())


@torch.no_grad()
def quantized_input_bytes(model: nn.Module, example: torch.Tensor) -> int:
    """Bytes of the inputs of the layers fake quantization quantizes (convolutions, linear layers and the
    :mod:`qdr_plugin.quant.ops` points) in one forward pass of ``model`` on ``example``, each tensor once."""
    inputs: dict[int, torch.Tensor] = {}

    def keep(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        inputs.update((id(t), t) for t in args if isinstance(t, torch.Tensor))

    hooks = [m.register_forward_hook(keep) for m in model.modules() if type(m) in FLOAT_TO_QUANT]
    try:
        model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return sum(t.numel() * t.element_size() for t in inputs.values())


@dataclass(frozen=True)
class MemoryEstimate:
    """The memory a training run needs on top of what the process already holds (interpreter, torch, basicsr).

    Attributes:
        parameters: the network's parameter count.
        activations: bytes autograd keeps for the backward pass of one training step of the batch, in the stage that
            needs the most memory.
        total: the estimate, in bytes.
    """

    parameters: int
    activations: int
    total: int


def estimate_training_memory(model: nn.Module, batch: torch.Tensor, qat: bool, fold_bn: bool = True) -> MemoryEstimate:
    """The memory of training ``model`` (float) on batches like ``batch`` (``meta`` tensors are best), with a QAT
    stage when ``qat`` (BatchNorm folded first when ``fold_bn``, as ``quant.fold_bn``).

    A stage needs its copies of the parameters (FP32: weights, gradients, Adam's moments; QAT: also the teacher and
    the quantized weights) plus :data:`ACTIVATION_FACTOR` times the tensors its forward pass saves for the
    backward pass (QAT: those of the folded network plus :data:`QUANTIZER_FACTOR` times the quantized layers'
    inputs); the estimate is the larger stage plus :data:`RUN_OVERHEAD`.
    """
    parameters = sum(p.numel() for p in model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    activations = saved_activation_bytes(model, batch)
    total = _STATE_COPIES[False] * param_bytes + int(ACTIVATION_FACTOR * activations)
    if qat:
        folded = deepcopy(model)
        if fold_bn:
            fold_batchnorm(folded)
        quantized = saved_activation_bytes(folded, batch) + int(QUANTIZER_FACTOR * quantized_input_bytes(folded, batch))
        qat_total = _STATE_COPIES[True] * param_bytes + int(ACTIVATION_FACTOR * quantized)
        if qat_total > total:
            activations, total = quantized, qat_total
    return MemoryEstimate(parameters, activations, total + RUN_OVERHEAD)


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get: ``MemAvailable`` of ``/proc/meminfo`` (else the free physical
    pages), or less when a cgroup limit leaves less; ``None`` when the system tells neither."""
    found = [value for value in (_meminfo_available(), *map(_cgroup_room, _CGROUP_LIMITS)) if value is not None]
    if not found:
        try:
            found.append(os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE'))
        except (ValueError, OSError):
            return None
    return min(found)


def _meminfo_available() -> int | None:
    try:
        with open('/proc/meminfo') as meminfo:
            for line in meminfo:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room(files: tuple[str, str]) -> int | None:
    """The limit minus the usage of a cgroup (v2 or v1); ``None`` without a limit."""
    try:
        with open(files[0]) as limit_file, open(files[1]) as usage_file:
            limit, usage = limit_file.read().strip(), usage_file.read().strip()
    except OSError:
        return None
    if not limit.isdigit() or not usage.isdigit() or int(limit) >= 2**60:
        return None
    return max(int(limit) - int(usage), 0)
