r"""Restormer (Zamir et al., CVPR 2022): a four-level U-Net of transformer blocks with transposed attention.

Each transformer block on a feature :math:`X \in \mathbb{R}^{C \times H \times W}` is

.. math::

    X' = X + \mathrm{MDTA}(\mathrm{LN}(X)), \qquad Y = X' + \mathrm{GDFN}(\mathrm{LN}(X'))

**MDTA** (multi-Dconv head transposed attention): a 1x1 convolution to :math:`3C` channels and a depth-wise 3x3
convolution give :math:`Q, K, V`; per head (:math:`C_h = C / \text{heads}` channels, the pixels flattened to
:math:`HW`), with :math:`\hat Q, \hat K` the rows L2-normalised over the pixels and :math:`\tau` a learnable
temperature per head,

.. math::

    A = \mathrm{softmax}(\tau\, \hat Q \hat K^\top) \in \mathbb{R}^{C_h \times C_h}, \qquad
    \mathrm{MDTA}(X) = W_p\, (A V)

attention across channels, so its cost is :math:`O(HW C^2 / \text{heads})`: linear in the pixel count.

**GDFN** (gated depth-wise feed-forward): :math:`[U_1, U_2] = \mathrm{dwconv}_{3\times3}(W_{in} X)` with
:math:`\lfloor \gamma C \rfloor` channels each (:math:`\gamma` = ``ffn_expansion_factor``),
:math:`\mathrm{GDFN}(X) = W_{out} (\mathrm{GELU}(U_1) \odot U_2)`.

**LN** normalises over the channels at every pixel, ``WithBias`` :math:`(x - \mu) / \sqrt{\sigma^2 + 10^{-5}}\, w
+ b` or ``BiasFree`` :math:`x / \sqrt{\sigma^2 + 10^{-5}}\, w` (the mean still subtracted inside the variance).

Network: a 3x3 patch embedding to ``dim`` channels; encoder levels 1-3 and the latent level 4 at ``dim * 2^(l-1)``
channels and ``2^-(l-1)`` resolution, joined by a 3x3 convolution halving the channels and a pixel-unshuffle
(down) or doubling them and a pixel-shuffle (up); decoder levels 3 and 2 concatenate the encoder skip and reduce the
channels with a 1x1 convolution; decoder level 1 concatenates without reduction (``2 dim`` channels), followed by
``num_refinement_blocks`` blocks and a 3x3 output convolution, with the global residual :math:`y = x + f(x)`
(``dual_pixel_task``: a 1x1 skip from the patch embedding instead, no global residual).

The constructor arguments and the ``state_dict`` keys are those of the authors' code (``patch_embed.proj``,
``encoder_level1.0.norm1.body.weight``, ``...attn.temperature``, ``...attn.qkv``, ``...attn.qkv_dwconv``,
``...attn.project_out``, ``...ffn.project_in``, ``...ffn.dwconv``, ``...ffn.project_out``, ``down1_2.body.0``,
``up2_1.body.0``, ``reduce_chan_level3``, ``refinement``, ``output``), so an official checkpoint loads strictly.
The default is the official configuration (26.1 M parameters at 3 channels).

Inputs of any size: the forward pass pads ``H`` and ``W`` up to a multiple of 8 (reflect, as the authors' test
scripts do) inside the graph and crops the output back. The output is not clamped (as the authors' network).

For INT8 every convolution is quantized (input per tensor, weight per output channel); the LayerNorms, the two
attention matrix products and the softmax, the GELU gate, the residual additions and the concatenations stay
float (see ``docs/hybrid.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.option_rules import OptionsError, is_int, is_number, need_bool, need_choice, need_int
from qdr_plugin.registry import register

LAYER_NORM_TYPES = ('WithBias', 'BiasFree')
LEVELS = 4
"""Resolution levels (three down-samplings: inputs are padded to a multiple of 8)."""
EPS = 1e-5


class BiasFreeLayerNorm(nn.Module):
    """``x / sqrt(var + eps) * w`` over the channel axis (dim 1) of an ``N x C x H x W`` tensor."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = (x - x.mean(1, keepdim=True)).pow(2).mean(1, keepdim=True)
        return x / torch.sqrt(var + EPS) * self.weight[:, None, None]


class WithBiasLayerNorm(nn.Module):
    """``(x - mean) / sqrt(var + eps) * w + b`` over the channel axis (dim 1) of an ``N x C x H x W`` tensor."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(1, keepdim=True)
        var = centred.pow(2).mean(1, keepdim=True)
        return centred / torch.sqrt(var + EPS) * self.weight[:, None, None] + self.bias[:, None, None]


class LayerNorm(nn.Module):
    """The channel LayerNorm of one type; its parameters live under ``body`` (the official key layout)."""

    def __init__(self, channels: int, LayerNorm_type: str):  # noqa: N803  (the official argument name)
        super().__init__()
        self.body = BiasFreeLayerNorm(channels) if LayerNorm_type == 'BiasFree' else WithBiasLayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Attention(nn.Module):
    """MDTA: ``project_out(softmax(temperature * q^ k^T) v)`` per head, attention over channels."""

    def __init__(self, dim: int, num_heads: int, bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = (t.reshape(n, self.num_heads, c // self.num_heads, h * w)
                   for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(n, c, h, w))


class FeedForward(nn.Module):
    """GDFN: ``project_out(gelu(u1) * u2)`` with ``[u1, u2] = dwconv(project_in(x))``."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u1, u2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(u1) * u2)


class TransformerBlock(nn.Module):
    """``x + attn(norm1(x))``, then ``+ ffn(norm2(.))``."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 LayerNorm_type: str):  # noqa: N803
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    """The 3x3 patch embedding (``proj``, no bias)."""

    def __init__(self, in_c: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """3x3 conv to ``n / 2`` channels, pixel-unshuffle by 2: ``2 n`` channels at half resolution (``body.0``)."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """3x3 conv to ``2 n`` channels, pixel-shuffle by 2: ``n / 2`` channels at double resolution (``body.0``)."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


STAGES = ('encoder_level1', 'encoder_level2', 'encoder_level3', 'latent', 'decoder_level3', 'decoder_level2',
          'decoder_level1', 'refinement')
"""The ``nn.Sequential`` stages of transformer blocks, in forward order."""


def block_names(num_blocks: Sequence[int], num_refinement_blocks: int) -> list[str]:
    """Module names of every transformer block of a Restormer, in forward order (``encoder_level1.0`` ...
    ``refinement.<n-1>``)."""
    counts = (*num_blocks, num_blocks[2], num_blocks[1], num_blocks[0], num_refinement_blocks)
    return [f'{stage}.{i}' for stage, count in zip(STAGES, counts) for i in range(count)]


def _list_of_ints(opt: Mapping[str, Any], path: str, key: str, minimum: int, example: str) -> None:
    value = opt.get(key)
    if value is not None and not (isinstance(value, (list, tuple)) and len(value) == LEVELS
                                  and all(is_int(v) and v >= minimum for v in value)):
        bound = 'positive integers' if minimum == 1 else f'integers >= {minimum}'
        raise OptionsError(f'{path}.{key}', f'must be a list of {LEVELS} {bound} (one per level)', value,
                           f'Write {key}: {example}.')


@register(ARCH_REGISTRY)
class Restormer(nn.Module):
    """Restormer with the official constructor and ``state_dict`` layout (see the module docstring).

    Args:
        inp_channels: input channels (3 RGB, 1 gray; 6 for the dual-pixel task). out_channels: output channels
            (must equal ``inp_channels`` unless ``dual_pixel_task``: the global residual adds the input).
        dim: channels at level 1 (even: the down-sampling convolution halves them).
        num_blocks: transformer blocks at levels 1-4 (decoder levels 1-3 repeat levels 1-3).
        num_refinement_blocks: blocks after decoder level 1.
        heads: attention heads at levels 1-4 (each must divide its level's channels).
        ffn_expansion_factor: GDFN hidden channels per input channel. bias: biases in the block convolutions.
        LayerNorm_type: ``WithBias`` or ``BiasFree``.
        dual_pixel_task: 1x1 skip from the patch embedding and no global residual (dual-pixel defocus deblurring).
    """

    dfd_layer = 'latent'

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks: Sequence[int] = (4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads: Sequence[int] = (1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = 'WithBias',  # noqa: N803  (the official argument name)
        dual_pixel_task: bool = False,
    ):
        super().__init__()
        self.check_options({
            'inp_channels': inp_channels, 'out_channels': out_channels, 'dim': dim, 'num_blocks': num_blocks,
            'num_refinement_blocks': num_refinement_blocks, 'heads': heads,
            'ffn_expansion_factor': ffn_expansion_factor, 'bias': bias, 'LayerNorm_type': LayerNorm_type,
            'dual_pixel_task': dual_pixel_task,
        }, type(self).__name__)
        self.in_ch = inp_channels
        self.dual_pixel_task = dual_pixel_task

        def stage(level: int, count: int, width: int | None = None) -> nn.Sequential:
            channels = width or dim * 2**level
            return nn.Sequential(*[TransformerBlock(channels, heads[level], ffn_expansion_factor, bias, LayerNorm_type)
                                   for _ in range(count)])

        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = stage(0, num_blocks[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = stage(1, num_blocks[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = stage(2, num_blocks[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = stage(3, num_blocks[3])
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        self.decoder_level3 = stage(2, num_blocks[2])
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)
        self.decoder_level2 = stage(1, num_blocks[1])
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = stage(0, num_blocks[0], width=dim * 2)
        self.refinement = stage(0, num_refinement_blocks, width=dim * 2)
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, 1, bias=bias)
        self.output = nn.Conv2d(dim * 2, out_channels, 3, padding=1, bias=bias)

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], path: str = 'Restormer') -> None:
        """The rules of the constructor's arguments (the ``network_g`` keys), for the constructor and the pre-flight
        check: positive channel counts, an even ``dim``, ``num_blocks`` / ``heads`` lists of four, every level's
        channels divisible by its heads, ``ffn_expansion_factor`` large enough for one hidden channel,
        ``LayerNorm_type`` one of two names, ``out_channels == inp_channels`` with the global residual. An absent
        key (or ``~``) takes its default. Raises :class:`~qdr_plugin.option_rules.OptionsError` at
        ``<path>.<key>``."""
        inp = need_int(opt, path, 'inp_channels', 1, default=3, example='3')
        out = need_int(opt, path, 'out_channels', 1, default=3, example='3')
        dim = need_int(opt, path, 'dim', 2, default=48, example='48')
        if dim % 2:
            raise OptionsError(f'{path}.dim', 'must be even (each down-sampling convolution halves the channels)',
                               dim, 'Write dim: 48.')
        need_int(opt, path, 'num_refinement_blocks', 0, example='4')
        _list_of_ints(opt, path, 'num_blocks', 0, '[4, 6, 6, 8]')
        _list_of_ints(opt, path, 'heads', 1, '[1, 2, 4, 8]')
        need_bool(opt, path, 'bias')
        need_choice(opt, path, 'LayerNorm_type', LAYER_NORM_TYPES)
        dual = need_bool(opt, path, 'dual_pixel_task', default=False)
        factor = opt.get('ffn_expansion_factor')
        factor = 2.66 if factor is None else factor
        if not is_number(factor) or int(dim * factor) < 1:
            raise OptionsError(f'{path}.ffn_expansion_factor', f'must be a number with int(dim * factor) >= 1 '
                               f'(dim {dim})', factor, 'Write ffn_expansion_factor: 2.66.')
        heads = opt.get('heads') or (1, 2, 4, 8)
        for level, count in enumerate(heads):
            if (dim * 2**level) % count:
                raise OptionsError(f'{path}.heads', f'heads[{level}] = {count} does not divide the {dim * 2**level} '
                                   f'channels of level {level + 1}', list(heads),
                                   'Choose heads that divide dim * 2^level, e.g. [1, 2, 4, 8].')
        if not dual and out != inp:
            raise OptionsError(f'{path}.out_channels', f'differs from inp_channels ({inp}), but the global residual '
                               'adds the input to the output', out, f'Write out_channels: {inp}.')

    def block_names(self) -> list[str]:
        """Module names of every block of the stages, in forward order (``encoder_level1.0`` ... ``refinement.3``)."""
        return [f'{stage}.{i}' for stage in STAGES for i in range(len(getattr(self, stage)))]

    @property
    def decoder_layers(self) -> list[str]:
        """Module names of the decoder stages, from the lowest resolution up (for decoder distillation)."""
        return ['decoder_level3', 'decoder_level2', 'decoder_level1']

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        h, w = inp_img.shape[-2:]
        multiple = 2 ** (LEVELS - 1)
        pad_h, pad_w = (multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple
        x = F.pad(inp_img, (0, pad_w, 0, pad_h), mode='reflect')  # unconditional: traced exports keep H, W dynamic
        enc1_in = self.patch_embed(x)
        enc1 = self.encoder_level1(enc1_in)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1)))
        if self.dual_pixel_task:
            out = self.output(dec1 + self.skip_conv(enc1_in))
        else:
            out = self.output(dec1) + x
        return out[..., :h, :w]
