"""Quantization points in basicsr's residual blocks, so an integer runtime runs their additions and gates.

basicsr writes a residual block's sum as a plain ``identity + out`` and RCAN's channel attention as ``x * y``. The
quantizer of the sum's result sits at the next convolution, but its operands stay float: ONNX Runtime then runs
the ``+`` in float (its ``QLinearAdd`` needs both operands dequantized and the result quantized) and TensorRT's rules
want Q/DQ on both inputs of a residual add. :func:`residual_points` gives each such block, in place, the same
forward written with :class:`~qdr_plugin.quant.ops.Add` / :class:`~qdr_plugin.quant.ops.Mul` points (exactly ``a +
b`` and ``a * b`` in float); :func:`qdr_plugin.quant.quantize_model` quantizes their operands, and the quantizer of
an operand that also feeds a convolution is tied to that convolution's (one quantizer per tensor). It runs with
``quant.integer_points`` only (:func:`~qdr_plugin.quant.convert.register_point_rewrite`).

============================ ============================================ ==============================
block (arch)                 float form                                   rewritten
============================ ============================================ ==============================
``ResidualBlockNoBN``        ``x + conv2(relu(conv1(x))) * res_scale``    ``add(x, ...)``
(EDSR, MSRResNet)
``RCAB`` (RCAN)              ``x + rcab(x) * res_scale``                  ``add(x, ...)``
``ChannelAttention`` (RCAN)  ``x * sigmoid(...)``                         ``mul(x, sigmoid(...))``
``ResidualGroup`` (RCAN)     ``x + conv(residual_group(x))``              ``add(x, ...)``
``ResidualDenseBlock``       ``x + 0.2 * f(x)``,                          ``add(x, 0.2 * f(x))``,
(RRDBNet)                    ``cat((x, x1, ...), 1)``                     ``cat2(x, x1)`` ... ``cat5``
``RRDB`` (RRDBNet)           ``x + 0.2 * f(x)``                           ``add(x, scale(f(x), 0.2))``
``RRDBNet``                  ``interpolate(feat, scale_factor=2)``        ``up1(feat)``, ``up2(...)``
============================ ============================================ ==============================

The dense block's concatenations become :class:`~qdr_plugin.quant.ops.Concat` points: their inputs (the block input
and the LeakyReLU outputs) are then quantized, so ONNX Runtime runs the LeakyReLUs as ``QLinearLeakyRelu`` and the
concatenations as ``QLinearConcat`` instead of dequantizing every feature map. A tensor that several concatenations
read has one quantizer (:func:`qdr_plugin.quant.tie_shared_quantizers`), so a block's concatenations share one scale.

A ``res_scale`` of 1 is left out of the rewritten form (the same numbers), so the convolution's output feeds the
add's quantizer directly. RRDBNet's nearest up-samplings become
:class:`~qdr_plugin.quant.ops.Upsample` points, whose input is quantized with the next convolution's quantizer: ONNX
Runtime then runs the sum before the first one as ``QLinearAdd``, the LeakyReLU before the second as
``QLinearLeakyRelu``, and both up-samplings on 8-bit tensors. The top-level ``res += x`` of EDSR / RCAN and
RRDBNet's ``feat + body_feat`` are left as they are: both operands come from convolutions that get output
quantizers (:mod:`qdr_plugin.quant.output_points`), and the in-place sum is the feature DFD compares there.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from basicsr.archs.arch_util import ResidualBlockNoBN, pixel_unshuffle
from basicsr.archs.rcan_arch import RCAB, ChannelAttention, ResidualGroup
from basicsr.archs.rrdbnet_arch import RRDB, ResidualDenseBlock, RRDBNet
from torch import nn

from qdr_plugin.quant.convert import register_point_rewrite
from qdr_plugin.quant.ops import Add, Concat, Mul, Upsample


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
    """RRDBNet's ``ResidualDenseBlock`` with its sum as an ``Add`` point and its concatenations as ``Concat``
    points."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(self.cat2(x, x1)))
        x3 = self.lrelu(self.conv3(self.cat3(x, x1, x2)))
        x4 = self.lrelu(self.conv4(self.cat4(x, x1, x2, x3)))
        return self.add(x, self.conv5(self.cat5(x, x1, x2, x3, x4)) * 0.2)


class PointRRDB(RRDB):
    """RRDBNet's ``RRDB`` with its sum as an ``Add`` point and its ``* 0.2`` as a ``Mul`` point of a quantized
    tensor and a float constant (folded into the dequantization at export)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, self.scale(self.rdb3(self.rdb2(self.rdb1(x))), 0.2))


class PointRRDBNet(RRDBNet):
    """``RRDBNet`` with its nearest up-samplings as ``Upsample`` points."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 2:
            feat = pixel_unshuffle(x, scale=2)
        elif self.scale == 1:
            feat = pixel_unshuffle(x, scale=4)
        else:
            feat = x
        feat = self.conv_first(feat)
        body_feat = self.conv_body(self.body(feat))
        feat = feat + body_feat
        feat = self.lrelu(self.conv_up1(self.up1(feat)))
        feat = self.lrelu(self.conv_up2(self.up2(feat)))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


POINT_FORMS: dict[type, tuple[type, dict[str, Callable[[], nn.Module]]]] = {
    ResidualBlockNoBN: (PointResidualBlockNoBN, {'add': Add}),
    RCAB: (PointRCAB, {'add': Add}),
    ChannelAttention: (PointChannelAttention, {'mul': Mul}),
    ResidualGroup: (PointResidualGroup, {'add': Add}),
    ResidualDenseBlock: (PointResidualDenseBlock, {'add': Add, **{f'cat{k}': Concat for k in range(2, 6)}}),
    RRDB: (PointRRDB, {'add': Add, 'scale': partial(Mul, quantize_b=False)}),
    RRDBNet: (PointRRDBNet, {'up1': Upsample, 'up2': Upsample}),
}
"""basicsr block class -> (its form with quantization points, the points: attribute name -> class)."""


@register_point_rewrite
def residual_points(model: nn.Module) -> int:
    """Give every block of :data:`POINT_FORMS` in ``model`` its form with ``Add`` / ``Mul`` / ``Concat`` /
    ``Upsample`` points (in place: the class changes, the points are new child modules; parameters and their names
    stay); returns how many blocks."""
    changed = 0
    for module in model.modules():
        form = POINT_FORMS.get(type(module))
        if form is not None:
            point_class, points = form
            module.__class__ = point_class
            for name, op in points.items():
                setattr(module, name, op())
            changed += 1
    return changed
