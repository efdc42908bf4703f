"""Quantized counterparts of the float layers: fake-quantized inputs (per tensor) and weights (per output channel).

``QuantConv2d(x) = conv(Q_a(x), Q_w(W)) + b``: the bias stays float (in an INT8 kernel it is an int32 with scale
``s_a * s_w``, an error far below one output step). The quantized layers subclass the float ones and keep the very
same ``weight`` / ``bias`` parameters, so an optimizer built before conversion still updates them, and the state
dict only gains the quantizers' ``step`` / ``zero_point`` / ``initialized`` entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ops
from .config import QuantConfig
from .fake_quant import ActQuantizer, WeightQuantizer


def act_quantizer(cfg: QuantConfig) -> ActQuantizer:
    """A new activation quantizer of ``cfg`` (bits, grid, learned or observed)."""
    return ActQuantizer(cfg.act_bits, symmetric=cfg.act_symmetric, learn=cfg.learn_step, observe=cfg.observes)


def _weight_quantizer(cfg: QuantConfig, weight: torch.Tensor, channels: int, axis: int) -> WeightQuantizer:
    quantizer = WeightQuantizer(cfg.weight_bits, channels, axis=axis, learn=cfg.learn_step, observe=cfg.observes)
    quantizer.init_from_weight(weight, cfg.weight_init)
    return quantizer


def _adopt_parameters(new: nn.Module, old: nn.Module) -> None:
    new.weight = old.weight
    new.bias = old.bias


class QuantConv2d(nn.Conv2d):
    """``nn.Conv2d`` with an input activation quantizer and a per-output-channel (axis 0) weight quantizer, and an
    output quantizer ``out_quant`` where its output reaches float work (:mod:`qdr_plugin.quant.output_points`;
    ``None`` otherwise)."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, cfg: QuantConfig) -> QuantConv2d:
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups, conv.bias is not None, conv.padding_mode, device=conv.weight.device,
        )
        _adopt_parameters(new, conv)
        new.act_quant = act_quantizer(cfg)
        new.weight_quant = _weight_quantizer(cfg, conv.weight, conv.out_channels, axis=0)
        new.register_module('out_quant', None)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._conv_forward(self.act_quant(x), self.weight_quant(self.weight), self.bias)
        return y if self.out_quant is None else self.out_quant(y)


class QuantConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d``; its weight is ``(C_in, C_out / groups, kH, kW)``, so output channels are axis 1."""

    @classmethod
    def from_float(cls, conv: nn.ConvTranspose2d, cfg: QuantConfig) -> QuantConvTranspose2d:
        if conv.groups != 1:
            raise ValueError('quantize_model: grouped ConvTranspose2d is not supported; keep it FP32 with keep_fp32.')
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.output_padding,
            conv.groups, conv.bias is not None, conv.dilation, conv.padding_mode, device=conv.weight.device,
        )
        _adopt_parameters(new, conv)
        new.act_quant = act_quantizer(cfg)
        new.weight_quant = _weight_quantizer(cfg, conv.weight, conv.out_channels, axis=1)
        return new

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        output_padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        return F.conv_transpose2d(
            self.act_quant(x), self.weight_quant(self.weight), self.bias, self.stride, self.padding, output_padding,
            self.groups, self.dilation,
        )


class QuantLinear(nn.Linear):
    """``nn.Linear`` with a per-tensor input quantizer and a per-output-feature (axis 0) weight quantizer."""

    @classmethod
    def from_float(cls, linear: nn.Linear, cfg: QuantConfig) -> QuantLinear:
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, device=linear.weight.device)
        _adopt_parameters(new, linear)
        new.act_quant = act_quantizer(cfg)
        new.weight_quant = _weight_quantizer(cfg, linear.weight, linear.out_features, axis=0)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_quant(x), self.weight_quant(self.weight), self.bias)


class QuantAdd(ops.Add):
    """``Q_a(a) + Q_b(b)``: each operand has its own activation quantizer (``a`` stays float when the
    op was built with ``quantize_a=False``)."""

    @classmethod
    def from_float(cls, op: ops.Add, cfg: QuantConfig) -> QuantAdd:
        new = cls(op.quantize_a)
        new.quant_a = act_quantizer(cfg) if op.quantize_a else nn.Identity()
        new.quant_b = act_quantizer(cfg)
        return new

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.quant_a(a) + self.quant_b(b)


class QuantSub(ops.Sub):
    """``Q_a(a) - Q_b(b)``: each operand has its own activation quantizer (``a`` stays float when the
    op was built with ``quantize_a=False``)."""

    @classmethod
    def from_float(cls, op: ops.Sub, cfg: QuantConfig) -> QuantSub:
        new = cls(op.quantize_a)
        new.quant_a = act_quantizer(cfg) if op.quantize_a else nn.Identity()
        new.quant_b = act_quantizer(cfg)
        return new

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.quant_a(a) - self.quant_b(b)


class QuantMul(ops.Mul):
    """``Q_a(a) * Q_b(b)`` (``b`` stays float when the op was built with ``quantize_b=False``)."""

    @classmethod
    def from_float(cls, op: ops.Mul, cfg: QuantConfig) -> QuantMul:
        new = cls(op.quantize_b)
        new.quant_a = act_quantizer(cfg)
        new.quant_b = act_quantizer(cfg) if op.quantize_b else nn.Identity()
        return new

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.quant_a(a) * self.quant_b(b)


class QuantConcat(ops.Concat):
    """``cat(Q(t_1), ..., Q(t_n))`` with one shared quantizer, so the concatenated tensor has a single scale."""

    @classmethod
    def from_float(cls, op: ops.Concat, cfg: QuantConfig) -> QuantConcat:
        new = cls(op.dim)
        new.quant = act_quantizer(cfg)
        return new

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.quant(t) for t in tensors], self.dim)


class QuantUpsample(ops.Upsample):
    """``upsample(Q(x))``: nearest up-sampling of the quantized tensor (the same values as ``Q(upsample(x))``)."""

    @classmethod
    def from_float(cls, op: ops.Upsample, cfg: QuantConfig) -> QuantUpsample:
        new = cls(op.factor)
        new.quant = act_quantizer(cfg)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.quant(x))


FLOAT_TO_QUANT: dict[type, type] = {
    nn.Conv2d: QuantConv2d,
    nn.ConvTranspose2d: QuantConvTranspose2d,
    nn.Linear: QuantLinear,
    ops.Add: QuantAdd,
    ops.Sub: QuantSub,
    ops.Mul: QuantMul,
    ops.Concat: QuantConcat,
    ops.Upsample: QuantUpsample,
}
