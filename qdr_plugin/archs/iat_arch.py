r"""IAT, the Illumination Adaptive Transformer (Cui et al., BMVC 2022, "You Only Need 90K Parameters to Adapt Light:
a Light Weight Transformer for Image Enhancement and Exposure Correction"), laid out so that the published LOL
weights (``cuiziteng/Illumination-Adaptive-Transformer``'s ``IAT_enhance/best_Epoch_lol_v1.pth`` and
``best_Epoch_lol.pth``) load strictly.

The input ``x`` is the RGB image in [0, 1]. Two branches read it:

- the **local branch** (``local_net``, full resolution, 16 channels) predicts a per-pixel multiplier ``M >= 0``
  and offset ``A`` in (-1, 1) (3 channels each):

  .. math::

      f = \mathrm{lrelu}_{0.2}(\mathrm{conv}_{3\times3}(x)), \quad
      M = \mathrm{relu}(\mathrm{conv}_{3\times3}(B_M(f) + f)), \quad
      A = \tanh(\mathrm{conv}_{3\times3}(B_A(f) + f)),

  where ``B_M`` / ``B_A`` are three :class:`PixelBlock` s each (``mul_blocks`` / ``add_blocks``);
- the **global branch** (``global_net``, on a 4x down-sampled feature) predicts one colour matrix
  ``C`` (3x3) and one gamma ``\gamma`` per image with 10 learned queries attending to the image's tokens
  (:class:`GlobalBranch`).

The output is

.. math::

    y = \mathrm{clamp}\Big(\big(\mathrm{clamp}(C\,(u \odot M + A),\; 10^{-8},\; 1)\big)^{\gamma},\; 0,\; 1\Big),

with ``C`` acting on the RGB vector of every pixel and ``u`` the image both branches read: ``u = x`` (the LOL-v1
weights, ``input_norm=False``) or ``u = 2x - 1`` in [-1, 1] (the LOL-v2-real weights were trained on inputs
normalised with mean 0.5 and deviation 0.5: ``IAT(input_norm=True)``). No padding is needed: every layer takes any
``H`` and ``W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.quant.ops import Add
from qdr_plugin.registry import register

from .subnormal import flush_subnormal_on_load

__all__ = ['IAT']


class ChannelAffine(nn.Module):
    r"""A learned per-pixel mixing of the channels, then a per-channel scale and shift (IAT's "Aff_channel"):

    .. math:: y_{i} = \alpha_i \sum_j W_{ij}\, x_{j} + \beta_i

    on a ``(N, C, H, W)`` tensor (``W`` starts as the identity, ``alpha`` as ones, ``beta`` as zeros). Computed as
    one 1x1 convolution with the weight ``alpha_i W_ij`` and the bias ``beta``. The parameters keep the published
    shapes: ``alpha`` / ``beta`` ``(1, 1, C)``, ``color`` ``(C, C)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, channels))
        self.beta = nn.Parameter(torch.zeros(1, 1, channels))
        self.color = nn.Parameter(torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = (self.color * self.alpha.reshape(-1, 1))[:, :, None, None]
        return F.conv2d(x, weight, self.beta.reshape(-1))


class ConvMlp(nn.Module):
    """``fc2(gelu(fc1(x)))`` with 1x1 convolutions (``channels -> hidden -> channels``)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PixelBlock(nn.Module):
    r"""IAT's local block: a depth-wise positional convolution, then a convolutional "attention" and an MLP, each on
    a :class:`ChannelAffine`-normalised input and scaled per channel (``gamma_1`` / ``gamma_2``, layer scale):

    .. math::

        x &\leftarrow x + \mathrm{dw}_{3\times3}(x) \\
        x &\leftarrow x + \gamma_1 \odot \mathrm{conv}_{1\times1}(\mathrm{dw}_{5\times5}(\mathrm{conv}_{1\times1}(
              \mathrm{norm}_1(x)))) \\
        x &\leftarrow x + \gamma_2 \odot \mathrm{mlp}(\mathrm{norm}_2(x))
    """

    def __init__(self, channels: int, mlp_ratio: int = 4):
        super().__init__()
        self.gamma_1 = nn.Parameter(torch.full((1, channels, 1, 1), 1e-4))
        self.gamma_2 = nn.Parameter(torch.full((1, channels, 1, 1), 1e-4))
        self.pos_embed = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.norm1 = ChannelAffine(channels)
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 1)
        self.attn = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.norm2 = ChannelAffine(channels)
        self.mlp = ConvMlp(channels, mlp_ratio * channels)
        # the residual sums as quantization points: INT8 on both inputs of each add (TensorRT's residual form)
        self.add_pos, self.add_attn, self.add_mlp = Add(), Add(), Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.add_pos(x, self.pos_embed(x))
        x = self.add_attn(x, self.gamma_1 * self.conv2(self.attn(self.conv1(self.norm1(x)))))
        return self.add_mlp(x, self.gamma_2 * self.mlp(self.norm2(x)))


class LocalBranch(nn.Module):
    """The per-pixel multiplier ``M`` and offset ``A`` (see the module docstring)."""

    def __init__(self, dim: int = 16, num_blocks: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, dim, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.mul_blocks = nn.Sequential(*(PixelBlock(dim) for _ in range(num_blocks)))
        self.add_blocks = nn.Sequential(*(PixelBlock(dim) for _ in range(num_blocks)))
        self.mul_end = nn.Sequential(nn.Conv2d(dim, 3, 3, padding=1), nn.ReLU())
        self.add_end = nn.Sequential(nn.Conv2d(dim, 3, 3, padding=1), nn.Tanh())
        self.skip_mul, self.skip_add = Add(), Add()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.act(self.conv1(x))
        mul = self.mul_end(self.skip_mul(self.mul_blocks(feat), feat))
        add = self.add_end(self.skip_add(self.add_blocks(feat), feat))
        return mul, add


class ConvEmbedding(nn.Module):
    """Two 3x3 stride-2 convolutions with BatchNorm (GELU between): ``3 -> dim / 2 -> dim`` channels at 1/4 of the
    resolution."""

    def __init__(self, in_ch: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_ch, dim // 2, 3, stride=2, padding=1),
            nn.BatchNorm2d(dim // 2),
            nn.GELU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1),
            nn.BatchNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class QueryAttention(nn.Module):
    r"""Multi-head attention of ``Q`` learned queries (``q``, ``(1, Q, dim)``) to the ``T`` tokens ``t``:

    .. math::

        \mathrm{out} = \mathrm{proj}\Big(\big[\mathrm{softmax}\big(q_h (t W_k)_h^{\top} / \sqrt{d_h}\big)
                       (t W_v)_h\big]_{h=1..\mathrm{heads}}\Big) \in \mathbb{R}^{Q \times \mathrm{dim}}

    (``k`` and ``v`` without bias, ``d_h = dim / heads``).
    """

    def __init__(self, dim: int, num_heads: int, num_queries: int = 10):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Parameter(torch.ones(1, num_queries, dim))
        self.k = nn.Linear(dim, dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """``(N, L, dim)`` -> ``(N, heads, L, dim / heads)``."""
        return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.q.expand(tokens.shape[0], -1, -1))
        k, v = self._heads(self.k(tokens)), self._heads(self.v(tokens))
        weights = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).flatten(2))


class TokenMlp(nn.Module):
    """``fc2(gelu(fc1(t)))`` with linear layers on ``(N, L, dim)`` tokens."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(t)))


class QueryBlock(nn.Module):
    r"""The global branch's transformer block: positional depth-wise convolution, then the queries attend to the
    tokens, then an MLP with a residual:

    .. math::

        t = \mathrm{tokens}(f + \mathrm{dw}_{3\times3}(f)), \quad
        z = \mathrm{attn}(\mathrm{LN}_1(t)), \quad
        \mathrm{out} = z + \mathrm{mlp}(\mathrm{LN}_2(z))
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = QueryAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TokenMlp(dim, mlp_ratio * dim)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        tokens = (feat + self.pos_embed(feat)).flatten(2).transpose(1, 2)
        z = self.attn(self.norm1(tokens))
        return z + self.mlp(self.norm2(z))


class GlobalBranch(nn.Module):
    r"""Per image, a gamma and a 3x3 colour matrix from the outputs ``z_0 .. z_9`` of :class:`QueryBlock`:

    .. math::

        \gamma = w_\gamma^{\top} z_0 + b_\gamma + \gamma_0, \qquad
        C_{ij} = w_C^{\top} z_{1 + 3i + j} + b_C + (C_0)_{ij}

    (``gamma_base`` ``\gamma_0`` starts at 1, ``color_base`` ``C_0`` at the identity).
    """

    def __init__(self, dim: int = 64, num_heads: int = 4):
        super().__init__()
        self.gamma_base = nn.Parameter(torch.ones(1))
        self.color_base = nn.Parameter(torch.eye(3))
        self.conv_large = ConvEmbedding(3, dim)
        self.generator = QueryBlock(dim, num_heads)
        self.gamma_linear = nn.Linear(dim, 1)
        self.color_linear = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(N, 3, H, W)`` -> ``gamma`` ``(N, 1)``, ``color`` ``(N, 3, 3)``."""
        z = self.generator(self.conv_large(x))
        gamma = self.gamma_linear(z[:, 0]) + self.gamma_base
        color = self.color_linear(z[:, 1:]).unflatten(1, (3, 3)).squeeze(-1) + self.color_base
        return gamma, color


@register(ARCH_REGISTRY)
class IAT(nn.Module):
    """IAT for low-light enhancement (see the module docstring); ``IAT()`` is the published configuration of the
    LOL-v1 weights, ``IAT(input_norm=True)`` that of the LOL-v2-real weights.

    Args:
        dim: channels of the local branch (16).
        global_dim: channels of the global branch (64).
        num_heads: attention heads of the global branch (4).
        num_blocks: :class:`PixelBlock` s in each of the local branch's two paths (3).
        input_norm: both branches read ``2x - 1`` instead of ``x`` (the LOL-v2-real weights).
    """

    in_ch = 3
    dfd_layer = 'local_net.mul_blocks'  # Decoder-Free Distillation: the local branch's multiplier features

    def __init__(self, dim: int = 16, global_dim: int = 64, num_heads: int = 4, num_blocks: int = 3,
                 input_norm: bool = False):
        super().__init__()
        flush_subnormal_on_load(self)  # the published weights hold subnormal floats (see archs/subnormal.py)
        self.input_norm = input_norm
        self.local_net = LocalBranch(dim, num_blocks)
        self.global_net = GlobalBranch(global_dim, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = 2 * x - 1 if self.input_norm else x
        mul, add = self.local_net(u)
        enhanced = u * mul + add
        gamma, color = self.global_net(u)
        mixed = (color @ enhanced.flatten(2)).reshape_as(enhanced)
        out = mixed.clamp(1e-8, 1.0) ** gamma[:, :, None, None]
        return out.clamp(0.0, 1.0)
