"""What the fake quantizers become in an ONNX export: QuantizeLinear / DequantizeLinear with the *learned* scales.

During ``torch.onnx.export`` (TorchScript exporter) every quantizer calls :func:`export_qdq` instead of its LSQ
function: an activation becomes ``DequantizeLinear(QuantizeLinear(x, s, z), s, z)``, a weight becomes
``DequantizeLinear(W_int8, s_c, 0, axis)`` with the integer weight stored in the file. The integer type of an
activation is the quantizer's ``onnx_dtype``: a symmetric quantizer (scale ``s``, zero point 0, range [-128, 127])
is exported as ``int8`` with zero point 0, or as ``uint8`` with zero point 128 -- the same numbers
(``q_u8 = q_s8 + 128``), in the form ONNX Runtime's CPU kernels run fastest.
"""

from __future__ import annotations

import torch

ONNX_DTYPES = {'int8': torch.int8, 'uint8': torch.uint8}


class _ActivationQDQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, bounds):
        q = torch.clamp(torch.round(x / scale) + zero_point.to(torch.float32), qmin, qmax)
        return (q - zero_point.to(torch.float32)) * scale

    @staticmethod
    def symbolic(g, x, scale, zero_point, qmin, qmax, bounds):
        y = g.op('DequantizeLinear', g.op('QuantizeLinear', x, scale, zero_point), scale, zero_point)
        if bounds is not None:  # a grid narrower than the integer type: QuantizeLinear alone would not saturate
            low, high = (g.op('Constant', value_t=torch.tensor(b, dtype=torch.float32)) for b in bounds)
            y = g.op('Clip', y, low, high)
        return y


class _WeightDQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight_int, scale, zero_point, axis):
        shape = [1] * weight_int.dim()
        shape[axis] = -1
        return weight_int.to(torch.float32) * scale.reshape(shape)

    @staticmethod
    def symbolic(g, weight_int, scale, zero_point, axis):
        return g.op('DequantizeLinear', weight_int, scale, zero_point, axis_i=axis)


def export_activation(x: torch.Tensor, step: float, zero_point: int, qmin: int, qmax: int, dtype: str) -> torch.Tensor:
    """``x`` fake-quantized as ONNX QuantizeLinear -> DequantizeLinear (``qmin``/``qmax`` in the ONNX type). A grid
    narrower than the type (fewer than 8 bits) gets a ``Clip((qmin - z) s, (qmax - z) s)`` after the
    DequantizeLinear: QuantizeLinear saturates only at the type's limits, and the clip of the dequantized values
    gives exactly the grid's numbers. (A Clip before the QuantizeLinear computes the same, but ONNX Runtime's
    optimizer folds it away.) The clip keeps ONNX Runtime from fusing the dequantized value into an integer kernel:
    below 8 bits the file is exact, not fast."""
    scale = torch.tensor(step, dtype=torch.float32)
    zero = torch.tensor(zero_point, dtype=ONNX_DTYPES[dtype])
    info = torch.iinfo(ONNX_DTYPES[dtype])
    bounds = None
    if (qmin, qmax) != (info.min, info.max):
        bounds = ((qmin - zero_point) * step, (qmax - zero_point) * step)
    return _ActivationQDQ.apply(x, scale, zero, qmin, qmax, bounds)


def integer_weight(weight: torch.Tensor, step: torch.Tensor, qmin: int, qmax: int, axis: int) -> torch.Tensor:
    """``clamp(round(W / s_c), qmin, qmax)`` as int8 (``s_c`` per slice along ``axis``)."""
    shape = [1] * weight.dim()
    shape[axis] = -1
    return torch.clamp(torch.round(weight.detach() / step.detach().reshape(shape)), qmin, qmax).to(torch.int8)


def export_weight(weight_int: torch.Tensor, scale: torch.Tensor, axis: int) -> torch.Tensor:
    """The weight as ONNX ``DequantizeLinear(int8 weight, per-channel scale, 0, axis)``.

    ``weight_int`` and ``scale`` (float32) must be made before tracing starts, so they enter the graph as constants.
    """
    zero = torch.zeros(scale.numel(), dtype=torch.int8)
    return _WeightDQ.apply(weight_int, scale, zero, axis)
