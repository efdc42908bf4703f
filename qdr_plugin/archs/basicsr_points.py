"""Quantization points in basicsr's residual blocks, so an integer runtime runs their additions and gates.

basicsr writes a residual block's sum as a plain ``identity + out`` and RCAN's channel attention as ``x * y``. The
quantizer of the sum's result sits at the next convolution, but its operands stay float: ONNX Runtime then runs
the ``+`` in float (its ``QLinearAdd`` needs both operands dequantized and the result quantized) and TensorRT's rules
want Q/DQ on both inputs of a residual add. :func:`residual_points` gives each such block, in place, the same
forward written with :class:`~qdr_plugin.quant.ops.Add` / :class:`~qdr_plugin.quant.ops.Mul` points (exactly ``a +
b`` and ``a * b`` in float); :func:`qdr_plugin.quant.quantize_model` quantizes their operands, and the quantizer of
an operand that also feeds a convolution is tied to that convolution's (one quantizer per tensor). It runs with
``quant.integer_points`` only (:func:`~qdr_plugin.quant.convert.register_point_rewrite`).

=========================== ======================================================== ============================
block (arch)                 float form                                               rewritten
=========================== ======================================================== ============================
``ResidualBlockNoBN``        ``x + conv2(relu(conv1(x))) * res_scale``                ``add(x, ...)``
(EDSR, MSRResNet)
``RCAB`` (RCAN)              ``x + rcab(x) * res_scale``                              ``add(x, ...)``
``ChannelAttention`` (RCAN)  ``x * sigmoid(...)``                                     ``mul(x, sigmoid(...))``
``ResidualGroup`` (RCAN)     ``x + conv(residual_group(x))``                          ``add(x, ...)``
``ResidualDenseBlock``,      ``x + 0.2 * f(x)``                                       ``add(x, 0.2 * f(x))``
``RRDB`` (RRDBNet)
=========================== ======================================================== ============================

A ``res_scale`` of 1 is left out of the rewritten form (the same numbers), so the convolution's output feeds the
add's quantizer directly. The top-level ``res += x`` of EDSR / RCAN and RRDBNet's ``feat + body_feat`` are left as
they are: both operands come from convolutions that get output quantizers
(:mod:`qdr_plugin.quant.output_points`), and the in-place sum is the feature DFD compares there.
"""

from __future__ import annotations

import torch
from basicsr.archs.arch_util import ResidualBlockNoBN
from basicsr.archs.rcan_arch import RCAB, ChannelAttention, ResidualGroup
from basicsr.archs.rrdbnet_arch import RRDB, ResidualDenseBlock
from torch import nn

from qdr_plugin.quant.convert import register_point_rewrite
from qdr_plugin.quant.ops import Add, Mul


def _scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    return x if scale == 1 else x * scale


class PointResidualBlockNoBN(ResidualBlockNoBN):
    """``ResidualBlockNoBN`` with its sum as an ``Add`` point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, _scaled(self.conv2(self.relu(self.conv1(x))), self.res_scale))


class PointRCAB(RCAB):
    """RCAN's ``RCAB`` with its sum as an ``Add`` point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, _scaled(self.rcab(x), self.res_scale))


class PointChannelAttention(ChannelAttention):
    """RCAN's ``ChannelAttention`` with its gate as a ``Mul`` point (both operands quantized: ONNX Runtime's
    ``QLinearSigmoid`` and ``QLinearMul``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mul(x, self.attention(x))


class PointResidualGroup(ResidualGroup):
    """RCAN's ``ResidualGroup`` with its sum as an ``Add`` point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, self.conv(self.residual_group(x)))


class PointResidualDenseBlock(ResidualDenseBlock):
    """RRDBNet's ``ResidualDenseBlock`` with its sum as an ``Add`` point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        return self.add(x, self.conv5(torch.cat((x, x1, x2, x3, x4), 1)) * 0.2)


class PointRRDB(RRDB):
    """RRDBNet's ``RRDB`` with its sum as an ``Add`` point."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, self.rdb3(self.rdb2(self.rdb1(x))) * 0.2)


POINT_FORMS: dict[type, tuple[type, str, type]] = {
    ResidualBlockNoBN: (PointResidualBlockNoBN, 'add', Add),
    RCAB: (PointRCAB, 'add', Add),
    ChannelAttention: (PointChannelAttention, 'mul', Mul),
    ResidualGroup: (PointResidualGroup, 'add', Add),
    ResidualDenseBlock: (PointResidualDenseBlock, 'add', Add),
    RRDB: (PointRRDB, 'add', Add),
}
"""basicsr block class -> (its form with a quantization point, the point's attribute name, the point's class)."""


@register_point_rewrite
def residual_points(model: nn.Module) -> int:
    """Give every block of :data:`POINT_FORMS` in ``model`` its form with an ``Add`` / ``Mul`` point (in place: the
    class changes, the point is a new child module; parameters and their names stay); returns how many."""
    changed = 0
    for module in model.modules():
        form = POINT_FORMS.get(type(module))
        if form is not None:
            point_class, name, op = form
            module.__class__ = point_class
            setattr(module, name, op())
            changed += 1
    return changed
