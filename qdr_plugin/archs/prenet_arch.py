r"""PReNet (Ren et al., CVPR 2019, "Progressive Image Deraining Networks: A Better and Simpler Baseline"), laid out
like the published ``csdwren/PReNet`` weights (``logs/Rain100H/PReNet6/net_latest.pth``) so they load strictly.

One stage, run ``T = stages`` times with shared weights. With the rainy image :math:`y`, the previous estimate
:math:`x_{t-1}` (:math:`x_0 = y`) and the ConvLSTM state :math:`h_{t-1}, c_{t-1}` (:math:`h_0 = c_0 = 0`):

.. math::

    u_t &= \mathrm{ReLU}(W_0 * [y, x_{t-1}])                                      && \texttt{conv0} \\
    z_t &= [u_t, h_{t-1}]                                                            \\
    i_t = \sigma(W_i * z_t),\; f_t &= \sigma(W_f * z_t),\; g_t = \tanh(W_g * z_t),\; o_t = \sigma(W_o * z_t)
        && \texttt{conv\_i, conv\_f, conv\_g, conv\_o} \\
    c_t &= f_t \odot c_{t-1} + i_t \odot g_t, \qquad h_t = o_t \odot \tanh(c_t)                   \\
    r_0 &= h_t, \qquad r_k = \mathrm{ReLU}\big(R_k(r_{k-1}) + r_{k-1}\big), \; k = 1..5
        && R_k = \mathrm{ReLU} \circ \mathrm{conv} \circ \mathrm{ReLU} \circ \mathrm{conv}\;(\texttt{res\_conv}k) \\
    x_t &= y + W_{out} * r_5                                                         && \texttt{conv}

All convolutions are 3x3, stride 1, padding 1, with bias; ``[a, b]`` is concatenation along the channels. The
estimates between stages are not clipped (as in the published network); the output is
:math:`\mathrm{clamp}(x_T, 0, 1)`. The input is RGB in [0, 1], any size.

State-dict keys: ``conv0.0``, ``res_conv1.0`` / ``.2`` ... ``res_conv5.0`` / ``.2``, ``conv_i.0``, ``conv_f.0``,
``conv_g.0``, ``conv_o.0``, ``conv.0`` (``.weight`` and ``.bias`` each); 168,963 parameters with the defaults.
"""

from __future__ import annotations

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.registry import register


def _conv(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, 1, 1)


@register(ARCH_REGISTRY)
class PReNet(nn.Module):
    """PReNet: ``stages`` recurrent stages of one shared network (a ConvLSTM and residual blocks) that each refine
    the derained estimate (see the module docstring for the equations).

    Args:
        stages: recurrent stages ``T`` (6 in the published PReNet6).
        width: feature channels (32).
        blocks: residual blocks per stage (5: ``res_conv1`` .. ``res_conv5``).

    The defaults are the published configuration; input and output are RGB in [0, 1].
    """

    in_ch = 3
    dfd_layer = 'res_conv3'  # Decoder-Free Distillation: the middle residual block (of the last stage)

    def __init__(self, stages: int = 6, width: int = 32, blocks: int = 5):
        super().__init__()
        self.stages, self.width = stages, width
        self.conv0 = nn.Sequential(_conv(2 * self.in_ch, width), nn.ReLU())
        self.block_names = tuple(f'res_conv{k}' for k in range(1, blocks + 1))
        for name in self.block_names:
            self.add_module(name, nn.Sequential(_conv(width, width), nn.ReLU(), _conv(width, width), nn.ReLU()))
        self.dfd_layer = self.block_names[(blocks - 1) // 2]
        self.conv_i = nn.Sequential(_conv(2 * width, width), nn.Sigmoid())
        self.conv_f = nn.Sequential(_conv(2 * width, width), nn.Sigmoid())
        self.conv_g = nn.Sequential(_conv(2 * width, width), nn.Tanh())
        self.conv_o = nn.Sequential(_conv(2 * width, width), nn.Sigmoid())
        self.conv = nn.Sequential(_conv(width, self.in_ch))

    def stage(
        self, rainy: torch.Tensor, estimate: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One stage: ``(x_t, h_t, c_t)`` from ``y``, ``x_{t-1}``, ``h_{t-1}``, ``c_{t-1}``."""
        z = torch.cat((self.conv0(torch.cat((rainy, estimate), 1)), hidden), 1)
        cell = self.conv_f(z) * cell + self.conv_i(z) * self.conv_g(z)
        hidden = self.conv_o(z) * torch.tanh(cell)
        r = hidden
        for name in self.block_names:
            r = torch.relu(getattr(self, name)(r) + r)
        return rainy + self.conv(r), hidden, cell

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        hidden = cell = x.new_zeros((n, self.width, h, w))
        estimate = x
        for _ in range(self.stages):
            estimate, hidden, cell = self.stage(x, estimate, hidden, cell)
        return torch.clamp(estimate, 0, 1)
