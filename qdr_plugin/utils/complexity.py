"""Parameter and multiply-accumulate (MAC) counts of a network, for tables and the README."""

from __future__ import annotations

import torch
from torch import nn


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
