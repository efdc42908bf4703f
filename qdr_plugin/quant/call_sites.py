"""Activation quantizers per call site, for layers a network calls several times in one forward pass.

A recurrent network runs the same layers again at every stage (PReNet: six stages of one network). The weights are
the same at every call, so one weight quantizer serves them all; the activations are not: the input of stage 1 and
that of stage 6 have different ranges, and one step size for both wastes resolution on one of them. A deployed graph
unrolls the stages anyway, one QuantizeLinear per call.

:func:`split_call_sites` gives such a layer one activation quantizer per call: call ``k`` (counted from 0 in each
forward pass of the network) uses ``sites[k]``. The count restarts at every forward pass of the quantized network
(a forward pre-hook, :func:`reset_call_sites`), so an interrupted pass cannot shift the sites of the next one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from .fake_quant import ActQuantizer
from .sharing import forward_once


class CallSiteActQuantizer(nn.Module):
    """Call ``k`` of a forward pass goes to ``sites[k]``; the state dict holds ``sites.<k>.step`` (and zero point)."""

    def __init__(self, sites: Iterable[ActQuantizer]):
        super().__init__()
        self.sites = nn.ModuleList(sites)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calls >= len(self.sites):
            raise RuntimeError(
                f'a layer quantized for {len(self.sites)} calls per forward pass was called again; the network calls '
                'its layers a different number of times than at quantization (e.g. a stage count that depends on the '
                'input): quantize it again, or keep the layer FP32 with quant.keep_fp32.'
            )
        site = self.sites[self.calls]
        self.calls += 1
        return site(x)

    def extra_repr(self) -> str:
        return f'call_sites={len(self.sites)}'


def reset_call_sites(model: nn.Module, args: tuple) -> None:
    """Forward pre-hook of the quantized network: every layer's next call is its call 0."""
    for module in model.modules():
        if isinstance(module, CallSiteActQuantizer):
            module.calls = 0


@torch.no_grad()
def count_calls(model: nn.Module, layers: dict[str, nn.Module], example: torch.Tensor | None) -> dict[str, int]:
    """How many times one forward pass on ``example`` calls each of ``layers`` (name -> module); 1 without one."""
    counts = dict.fromkeys(layers, 0)
    if example is None:
        return dict.fromkeys(layers, 1)

    def counter(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            counts[name] += 1
        return hook

    forward_once(model, example, [module.register_forward_pre_hook(counter(name)) for name, module in layers.items()])
    return {name: max(count, 1) for name, count in counts.items()}


def call_sequence(model: nn.Module, layers: dict[str, nn.Module], example: torch.Tensor | None) -> list[str]:
    """The names of ``layers``, one entry per call, in the order one forward pass on ``example`` calls them (layers it
    does not call are left out); the names as given, in their order, without an example."""
    if example is None:
        return list(layers)
    sequence: list[str] = []

    def recorder(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            sequence.append(name)
        return hook

    forward_once(model, example, [module.register_forward_pre_hook(recorder(name)) for name, module in layers.items()])
    return sequence


def split_call_sites(model: nn.Module, layer: nn.Module, calls: int) -> int:
    """Give each activation quantizer of ``layer`` one copy per call (``calls > 1``); returns how many it split.

    The first call keeps the existing quantizer, the others get fresh copies (same grid, uncalibrated). ``model``
    gets the :func:`reset_call_sites` pre-hook once.
    """
    split = 0
    for name, child in list(layer.named_children()):
        if isinstance(child, ActQuantizer):
            setattr(layer, name, CallSiteActQuantizer([child, *(copy.deepcopy(child) for _ in range(calls - 1))]))
            split += 1
    if split and not any(hook is reset_call_sites for hook in model._forward_pre_hooks.values()):
        model.register_forward_pre_hook(reset_call_sites)
    return split
