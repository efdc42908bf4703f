r"""AOD-Net (Li et al., ICCV 2017, "AOD-Net: All-in-One Dehazing Network"), laid out like the
``MayankSingal/PyTorch-Image-Dehazing`` re-implementation (``snapshots/dehazer.pth``) so its weights load strictly.

AOD-Net rewrites the atmospheric scattering model :math:`I = J t + A (1 - t)` so that one map :math:`K` holds both
the transmission :math:`t` and the airlight :math:`A`:

.. math::

    J = K \odot I - K + b, \qquad K = \frac{(I - A) / t + (A - b)}{I - 1}

with :math:`b = 1`. Five small convolutions estimate :math:`K` from the hazy image :math:`I` (all with bias, each
followed by a ReLU, ``[a, b]`` concatenation along the channels):

.. math::

    k_1 &= \mathrm{ReLU}(W_1^{1\times1} * I), \quad k_2 = \mathrm{ReLU}(W_2^{3\times3} * k_1), \quad
    k_3 = \mathrm{ReLU}(W_3^{5\times5} * [k_1, k_2]), \\
    k_4 &= \mathrm{ReLU}(W_4^{7\times7} * [k_2, k_3]), \quad K = \mathrm{ReLU}(W_5^{3\times3} * [k_1, k_2, k_3, k_4])

and the output is :math:`\mathrm{clamp}(K \odot I - K + 1, 0, 1)` (the published network ends with a ReLU, which
the clamp contains). Input and output are RGB in [0, 1], any size (every convolution is "same"-padded).

State-dict keys: ``e_conv1`` .. ``e_conv5`` (``.weight`` and ``.bias`` each), 1,761 parameters.
"""

from __future__ import annotations

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.registry import register

from .subnormal import flush_subnormal_on_load


@register(ARCH_REGISTRY)
class AODNet(nn.Module):
    """AOD-Net: a five-convolution estimate of ``K``, then ``J = K * I - K + b`` (see the module docstring).

    Args:
        width: channels of each of the four hidden convolutions (3 in the published network).
        b: the constant bias ``b`` of the reformulated model (1).

    The defaults are the published configuration; input and output are RGB in [0, 1].
    """

    in_ch = 3
    dfd_layer = 'e_conv4'  # Decoder-Free Distillation: the widest-context feature before K's last layer

    def __init__(self, width: int = 3, b: float = 1.0):
        super().__init__()
        flush_subnormal_on_load(self)  # the published weights hold subnormal floats (see archs/subnormal.py)
        self.b = b
        self.e_conv1 = nn.Conv2d(self.in_ch, width, 1, 1, 0)
        self.e_conv2 = nn.Conv2d(width, width, 3, 1, 1)
        self.e_conv3 = nn.Conv2d(2 * width, width, 5, 1, 2)
        self.e_conv4 = nn.Conv2d(2 * width, width, 7, 1, 3)
        self.e_conv5 = nn.Conv2d(4 * width, self.in_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k1 = torch.relu(self.e_conv1(x))
        k2 = torch.relu(self.e_conv2(k1))
        k3 = torch.relu(self.e_conv3(torch.cat((k1, k2), 1)))
        k4 = torch.relu(self.e_conv4(torch.cat((k2, k3), 1)))
        k = torch.relu(self.e_conv5(torch.cat((k1, k2, k3, k4), 1)))
        return torch.clamp(k * x - k + self.b, 0, 1)
