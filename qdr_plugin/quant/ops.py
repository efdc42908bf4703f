"""Float tensor operations as modules, so :func:`qdr_plugin.quant.quantize_model` can find and quantize them.

An arch that writes ``self.add = Add()`` and ``y = self.add(a, b)`` instead of ``a + b`` gets quantized inputs on
both operands after conversion (TensorRT wants Q/DQ on both inputs of a residual add). Before conversion these are
exactly ``a + b``, ``a - b``, ``a * b``, ``torch.cat`` and nearest up-sampling.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Add(nn.Module):
    """``a + b``. ``quantize_a=False``: after conversion only ``b`` is quantized (e.g. a network input carried to
    the output, which rounding would only add noise to)."""

    def __init__(self, quantize_a: bool = True):
        super().__init__()
        self.quantize_a = quantize_a

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


class Sub(nn.Module):
    """``a - b``. ``quantize_a=False``: after conversion only ``b`` is quantized (as for :class:`Add`)."""

    def __init__(self, quantize_a: bool = True):
        super().__init__()
        self.quantize_a = quantize_a

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - b


class Mul(nn.Module):
    """``a * b`` (element-wise, broadcasting). ``quantize_b=False``: after conversion only ``a`` is quantized
    (for a float gate or scale map that a deployment runs as a point-wise epilogue)."""

    def __init__(self, quantize_b: bool = True):
        super().__init__()
        self.quantize_b = quantize_b

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b


class Concat(nn.Module):
    """``torch.cat(tensors, dim)``."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return torch.cat(tensors, self.dim)


class Upsample(nn.Module):
    """Nearest-neighbour up-sampling by an integer ``factor``: ``F.interpolate(x, scale_factor=factor,
    mode='nearest')``. It only copies values, so after conversion its input is quantized with the quantizer of the
    layer that reads its output (one scale on both sides): a runtime then up-samples the 8-bit tensor."""

    def __init__(self, factor: int = 2):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.factor, mode='nearest')
