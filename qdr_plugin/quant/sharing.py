"""One quantizer per tensor: tie the activation quantizers that always see the same tensor (or the same values moved
by a pixel shuffle / unshuffle or copied by a nearest up-sampling).

A tensor often feeds several quantized consumers: the input of a residual block goes to its first convolution and
to the residual addition. Input-side quantizers would quantize it twice, with two different scales, where a
deployed INT8 graph has one QuantizeLinear per tensor (ONNX Runtime only runs a convolution in INT8 when its output
feeds a single QuantizeLinear). :func:`tie_shared_quantizers` runs the network once, finds the quantizers that
receive the same tensor object, and makes them one module (one step size, trained by all consumers); the
quantizer then computes its output once per tensor (see :class:`ActQuantizer`).

The same pass notes which quantizers only ever see the output of an ``nn.ReLU`` / ``nn.ReLU6``; with
``unsigned_relu`` those switch to the unsigned grid (:meth:`ActQuantizer.use_unsigned_grid`).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .fake_quant import ActQuantizer
from .modules import QuantConcat
from .ops import Upsample

RELU_TYPES = (nn.ReLU, nn.ReLU6)
PERMUTATION_TYPES = (nn.PixelShuffle, nn.PixelUnshuffle, Upsample, QuantConcat)
"""Modules that only move or copy values: their output holds the values of their (first) input, so a quantizer of
the output is tied to one of the input (a convolution's output quantizer and the next layer's, around a pixel
shuffle; an up-sampling point's input quantizer and the next layer's; a quantized concatenation's one quantizer,
which all its inputs pass, and the next layer's)."""


class _SameTensorObserver:
    """Records which quantizer saw which tensor during one forward pass (a permutation's output counting as its
    input), and which of those were ReLU outputs."""

    def __init__(self) -> None:
        self.seen: list[tuple[weakref.ref, int, ActQuantizer]] = []
        self.pairs: list[tuple[ActQuantizer, ActQuantizer]] = []
        self.relu_outputs: list[tuple[weakref.ref, int]] = []
        self.permuted: list[tuple[weakref.ref, torch.Tensor]] = []
        self.observed: set[int] = set()
        self.not_relu_fed: set[int] = set()

    def relu_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.relu_outputs.append((weakref.ref(output), output._version))

    def permutation_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.permuted.append((weakref.ref(output), inputs[0]))

    def _source(self, x: torch.Tensor) -> torch.Tensor:
        """The tensor whose values ``x`` holds: ``x`` itself, or the input of the permutations that made it."""
        while True:
            source = next((inp for ref, inp in self.permuted if ref() is x), None)
            if source is None:
                return x
            x = source

    def observe(self, x: torch.Tensor, quantizer: ActQuantizer) -> None:
        self.observed.add(id(quantizer))
        x = self._source(x)
        if not any(ref() is x and x._version == version for ref, version in self.relu_outputs):
            self.not_relu_fed.add(id(quantizer))
        for ref, version, other in self.seen:
            if ref() is x and x._version == version and other is not quantizer:
                self.pairs.append((other, quantizer))
                return
        self.seen.append((weakref.ref(x), x._version, quantizer))


def example_input(model: nn.Module, size: int = 64) -> torch.Tensor | None:
    """A zero image batch ``1 x C x size x size``: ``C`` from the model's ``in_ch`` / ``num_in_ch`` attribute, else
    from its first layer if that is a Conv2d; ``None`` when neither tells."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    channels = getattr(model, 'in_ch', None) or getattr(model, 'num_in_ch', None)
    if channels is None and isinstance(first, nn.Conv2d):
        channels = first.in_channels
    if channels is None or first is None:
        return None
    return torch.zeros(1, channels, size, size, device=first.weight.device)


def forward_once(model: nn.Module, example: torch.Tensor, hooks: list[RemovableHandle]) -> None:
    """One forward pass of ``model`` in eval mode on ``example``; then ``hooks`` are removed and the mode restored."""
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)


@torch.no_grad()
def tie_shared_quantizers(
    model: nn.Module, example: torch.Tensor | None = None, unsigned_relu: bool = False
) -> int:
    """Make the activation quantizers that receive the same tensor one shared module; returns how many were tied.

    ``example`` is one network input (default: :func:`example_input`); without one, nothing is tied (and
    ``unsigned_relu`` finds nothing). ``unsigned_relu``: symmetric quantizers whose every input is an ``nn.ReLU``
    / ``nn.ReLU6`` output switch to the unsigned grid ``[0, 2^b - 1]``.
    """
    example = example_input(model) if example is None else example
    if example is None:
        return 0
    slots = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, ActQuantizer)
    ]
    quantizers = {id(q): q for *_, q in slots}
    observer = _SameTensorObserver()
    for q in quantizers.values():
        q.observer = observer
    hooks = [m.register_forward_hook(observer.relu_hook) for m in model.modules() if isinstance(m, RELU_TYPES)]
    hooks += [m.register_forward_hook(observer.permutation_hook) for m in model.modules()
              if isinstance(m, PERMUTATION_TYPES)]
    try:
        forward_once(model, example, hooks)
    finally:
        for q in quantizers.values():
            q.observer = None
    root: dict[int, ActQuantizer] = {}

    def find(q: ActQuantizer) -> ActQuantizer:
        while id(q) in root:
            q = root[id(q)]
        return q

    for a, b in observer.pairs:
        ra, rb = find(a), find(b)
        if ra is not rb:
            root[id(rb)] = ra
    relu_fed = {id(q): True for q in quantizers.values()}
    for q in quantizers.values():
        if id(q) in observer.not_relu_fed or id(q) not in observer.observed:
            relu_fed[id(find(q))] = False
    for parent, name, child in slots:
        canonical = find(child)
        if canonical is not child:
            setattr(parent, name, canonical)
    if unsigned_relu:
        for q in {id(find(q)): find(q) for q in quantizers.values()}.values():
            if relu_fed[id(q)] and q.symmetric:
                q.use_unsigned_grid()
    return len(root)
