r"""GCANet (Chen et al., WACV 2019, "Gated Context Aggregation Network for Image Dehazing and Deraining"), laid out
so that the published dehazing weights (``cddlyf/GCANet``'s ``wacv_gcanet_dehaze.pth``) load strictly.

The published network reads an RGB image ``I`` in [0, 255] together with an edge map ``E`` and predicts the haze
residual; this module takes the plugin's ``x`` in [0, 1] and does the rest inside ``forward``:

.. math::

    I = 255\,x, \qquad
    E = \frac{1}{4}\cdot\frac{1}{3}\sum_{c}\big(|\partial^{-}_{x} I_c| + |\partial^{+}_{x} I_c|
        + |\partial^{-}_{y} I_c| + |\partial^{+}_{y} I_c|\big),

where :math:`\partial^{\pm}` are the absolute differences to the left / right (top / bottom) neighbour, zero where
the neighbour is outside the image. The network input is ``[I, E] - 128`` (4 channels), its output ``r`` (3
channels, the residual on the 0-255 scale), and

.. math::

    y = \mathrm{clamp}\big(x + r / 255,\; 0,\; 1\big).

``H`` and ``W`` are padded up to a multiple of 4 (replicate, so the edge map inside the image is the one of the
unpadded image) and the output is cropped back.

Body (``width`` = 64 channels, every normalisation an affine ``InstanceNorm2d``):

- encoder: ``conv1`` (3x3, 4 -> 64), ``conv2`` (3x3), ``conv3`` (3x3, stride 2), each + norm + ReLU; the last
  output is ``y1`` at half resolution;
- six smoothed dilated residual blocks ``res1..res6`` (dilation 2, 2, 2, 4, 4, 4) and one plain residual block
  ``res7``; ``y2`` is the output of ``res4``, ``y3`` of ``res7``. A residual block computes
  ``relu(x + norm2(conv2(relu(norm1(conv1(x))))))``; the smoothed dilated one runs a shared separable
  convolution before each dilated convolution: one ``(2d - 1) x (2d - 1)`` kernel applied to every channel alone
  (the same kernel for all channels), which removes the gridding artefacts of a dilation ``d``;
- gated fusion: ``g = gate([y1, y2, y3])`` (3x3 conv, 192 -> 3, with bias) and
  ``f = y1 g_1 + y2 g_2 + y3 g_3`` (each ``g_k`` one channel, broadcast over the 64);
- decoder: ``deconv3`` (4x4 transposed, stride 2) + norm + ReLU, ``deconv2`` (3x3) + norm + ReLU, ``deconv1``
  (1x1, 64 -> 3) gives ``r``.

The shared separable convolution is a plain ``nn.Conv2d(1, 1, k)`` (weight ``1 x 1 x k x k``, the layout of the
published ``pre_conv`` keys) run on the ``N*C`` single-channel images of the batch, so it is a convolution
module like the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.registry import register

__all__ = ['GCANet']


def _shared_separable(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (1 -> 1 channel) applied to each channel of ``x`` alone: ``(N, C, H, W)`` is run as ``N*C``
    one-channel images and reshaped back."""
    return conv(x.flatten(0, 1).unsqueeze(1)).reshape_as(x)


def _smoothing_conv(dilation: int) -> nn.Conv2d:
    """The shared separable convolution before a convolution of dilation ``d``: one ``(2d - 1) x (2d - 1)`` kernel,
    initialised to the identity (a centred 1)."""
    size = 2 * dilation - 1
    conv = nn.Conv2d(1, 1, size, padding=dilation - 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, dilation - 1, dilation - 1] = 1.0
    return conv


class ResidualBlock(nn.Module):
    """``relu(x + norm2(conv2(relu(norm1(conv1(x))))))`` with 3x3 convolutions of dilation ``dilation`` (no bias);
    with ``smooth``, a shared separable convolution (``pre_conv1`` / ``pre_conv2``) before each of them."""

    def __init__(self, channels: int, dilation: int = 1, smooth: bool = False):
        super().__init__()
        self.smooth = smooth
        if smooth:
            self.pre_conv1 = _smoothing_conv(dilation)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm1 = nn.InstanceNorm2d(channels, affine=True)
        if smooth:
            self.pre_conv2 = _smoothing_conv(dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm2 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _shared_separable(self.pre_conv1, x) if self.smooth else x
        y = F.relu(self.norm1(self.conv1(y)))
        if self.smooth:
            y = _shared_separable(self.pre_conv2, y)
        y = self.norm2(self.conv2(y))
        return F.relu(x + y)


@register(ARCH_REGISTRY)
class GCANet(nn.Module):
    """GCANet for dehazing (see the module docstring); ``GCANet()`` is the published configuration.

    Args:
        width: channels of every hidden layer (64 in the published model).
        multiple: ``H`` and ``W`` are padded up to a multiple of this inside ``forward`` (4).
    """

    in_ch = 3
    dfd_layer = 'res7'  # Decoder-Free Distillation: y3, the deepest feature before the gated fusion

    def __init__(self, width: int = 64, multiple: int = 4):
        super().__init__()
        self.multiple = multiple
        self.conv1 = nn.Conv2d(4, width, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm2d(width, affine=True)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm2d(width, affine=True)
        self.conv3 = nn.Conv2d(width, width, 3, stride=2, padding=1, bias=False)
        self.norm3 = nn.InstanceNorm2d(width, affine=True)
        self.res1 = ResidualBlock(width, 2, smooth=True)
        self.res2 = ResidualBlock(width, 2, smooth=True)
        self.res3 = ResidualBlock(width, 2, smooth=True)
        self.res4 = ResidualBlock(width, 4, smooth=True)
        self.res5 = ResidualBlock(width, 4, smooth=True)
        self.res6 = ResidualBlock(width, 4, smooth=True)
        self.res7 = ResidualBlock(width, 1)
        self.gate = nn.Conv2d(3 * width, 3, 3, padding=1, bias=True)
        self.deconv3 = nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)
        self.norm4 = nn.InstanceNorm2d(width, affine=True)
        self.deconv2 = nn.Conv2d(width, width, 3, padding=1)
        self.norm5 = nn.InstanceNorm2d(width, affine=True)
        self.deconv1 = nn.Conv2d(width, 3, 1)

    @staticmethod
    def edge_map(image: torch.Tensor) -> torch.Tensor:
        """The edge map ``E`` of the module docstring: ``(N, 3, H, W)`` -> ``(N, 1, H, W)``, on the scale of
        ``image``."""
        dx = (image[..., :, 1:] - image[..., :, :-1]).abs()
        dy = (image[..., 1:, :] - image[..., :-1, :]).abs()
        total = F.pad(dx, (1, 0)) + F.pad(dx, (0, 1)) + F.pad(dy, (0, 0, 1, 0)) + F.pad(dy, (0, 0, 0, 1))
        return total.mean(1, keepdim=True) / 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        x = F.pad(x, (0, pad_w, 0, pad_h), mode='replicate')  # unconditional: traced exports keep H, W dynamic
        image = x * 255
        y = torch.cat((image, self.edge_map(image)), 1) - 128
        y = F.relu(self.norm1(self.conv1(y)))
        y = F.relu(self.norm2(self.conv2(y)))
        y1 = F.relu(self.norm3(self.conv3(y)))
        y2 = self.res4(self.res3(self.res2(self.res1(y1))))
        y3 = self.res7(self.res6(self.res5(y2)))
        gates = self.gate(torch.cat((y1, y2, y3), 1))
        fused = y1 * gates[:, 0:1] + y2 * gates[:, 1:2] + y3 * gates[:, 2:3]
        y = F.relu(self.norm4(self.deconv3(fused)))
        y = F.relu(self.norm5(self.deconv2(y)))
        residual = self.deconv1(y)
        return (x + residual / 255)[..., :h, :w].clamp(0.0, 1.0)
