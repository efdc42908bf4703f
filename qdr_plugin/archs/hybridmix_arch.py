r"""HybridMixUNet: QATIE's quantization-aware image-enhancement U-Net (our reading of arXiv 2604.21743).

A U-Net of ``L = len(channel_mults) - 1`` down-samplings with ``c_i = width * channel_mults[i]`` channels at scale
``i`` (resolution ``2^-i``); the default ``channel_mults = (1, 2, 3, 3)`` gives ``C, 2C, 3C, 3C`` and a stride of 8.
Only INT8-friendly operations: convolutions, ReLU (or LeakyReLU), tanh, additions, multiplications, nearest
interpolation, a clamp. No normalisation, no attention, no transposed convolution, no pixel-shuffle.

Head: :math:`e_0 = \phi(\mathrm{conv}_{3\times3}(x))`, with :math:`\phi` the activation.

Gated tanh x tanh encoder, one stride-2 block per scale: a 3x3 stride-2 convolution gives :math:`2 c_{i+1}`
channels, split into halves :math:`a` and :math:`b`,

.. math::

    [a, b] = \mathrm{conv}^{s=2}_{3\times3}(e_i), \qquad e_{i+1} = \tanh(a) \odot \tanh(b) \in (-1, 1)

a gate that is bounded by construction: every encoder feature lies in :math:`(-1, 1)`, a range an 8-bit grid holds
without clipping outliers.

Bottleneck: ``mid_blocks`` residual blocks on :math:`e_L` (the module ``self.bottleneck``, named by
:attr:`HybridMixUNet.dfd_layer` for Decoder-Free Distillation).

Decoder with triplet skips, from the coarsest scale up: decoder level ``i`` (``i = L-1 .. 0``) merges three sources
at scale ``i`` by additions,

.. math::

    m_i = \phi\big(\mathrm{conv}_{3\times3}(\mathrm{up}_{2}(d_{i+1})) + e_i + \mathrm{conv}_{3\times3}(x_i)\big),
    \qquad d_i = R_i(m_i)

the previous decoder output :math:`d_{i+1}` (:math:`d_L` the bottleneck output) up-sampled by nearest
interpolation and a 3x3 convolution to :math:`c_i` channels, the encoder feature :math:`e_i` of the same scale, and
the input image at that scale :math:`x_i` (nearest down-sampling of the padded input, :math:`x_0 = x`) projected by
a 3x3 convolution to :math:`c_i` channels. :math:`R_i` is the refiner, ``refine_blocks`` residual blocks
:math:`r \mapsto r + \mathrm{conv}_{3\times3}(\phi(\mathrm{conv}_{3\times3}(r)))`.

Clamped global residual: :math:`y = \mathrm{clamp}(x + \mathrm{conv}_{3\times3}(d_0), 0, 1)`.

Quantization points: every convolution (``nn.Conv2d``), the gate product (``ops.Mul``, both ``tanh`` outputs
quantized), the residual-block and decoder-merge additions (``ops.Add``, both operands), and the global residual
(``ops.Add(quantize_a=False)``: the image is carried to the output unrounded). ``tanh``, the activations, the
nearest interpolations and the clamp run on float tensors.

Inputs of any size: the forward pass pads ``H`` and ``W`` up to a multiple of ``2^L`` (replicate) inside the graph
and crops the output back.

Parameters (``in_ch = 3``, defaults otherwise) grow as about ``880 width^2``: 0.23 M at ``width=16``, 0.51 M at 24,
0.90 M at 32, 3.59 M at 64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.option_rules import OptionsError, is_int, need_choice, need_int
from qdr_plugin.quant.ops import Add, Mul
from qdr_plugin.registry import register

from .efm_arch import ACTS, activation


class GatedDown(nn.Module):
    """``tanh(a) * tanh(b)`` with ``[a, b]`` the two halves of a 3x3 stride-2 convolution's output."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2 * out_channels, 3, stride=2, padding=1)
        self.gate = Mul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        return self.gate(torch.tanh(a), torch.tanh(b))


class ResBlock(nn.Module):
    """``x + conv3x3(act(conv3x3(x)))`` (the refiners and the bottleneck)."""

    def __init__(self, channels: int, act: str):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = activation(act, 'HybridMixUNet')
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, self.conv2(self.act(self.conv1(x))))


class DecoderStage(nn.Module):
    """One decoder level: the triplet merge ``act(up(d) + e + img_proj(x_i))``, then the refiner."""

    def __init__(self, in_channels: int, channels: int, image_channels: int, blocks: int, act: str):
        super().__init__()
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode='nearest'),
                                nn.Conv2d(in_channels, channels, 3, padding=1))
        self.image = nn.Conv2d(image_channels, channels, 3, padding=1)
        self.add_skip = Add()
        self.add_image = Add()
        self.act = activation(act, 'HybridMixUNet')
        self.refiner = nn.Sequential(*[ResBlock(channels, act) for _ in range(blocks)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        merged = self.add_image(self.add_skip(self.up(x), skip), self.image(image))
        return self.refiner(self.act(merged))


_COUNTS = (('width', 1, '32'), ('mid_blocks', 0, '1'), ('refine_blocks', 0, '1'))
"""The count arguments: ``(key, minimum, example)``."""


@register(ARCH_REGISTRY)
class HybridMixUNet(nn.Module):
    """QATIE's U-Net: gated tanh x tanh stride-2 encoder, triplet skips, refiners, nearest up-sampling, clamped
    global residual (see the module docstring).

    Args:
        in_ch: input channels (3 RGB, 1 gray). out_ch: output channels (default ``in_ch``; must equal it, the
            global residual adds the input to the output).
        width: base channels ``C`` (at full resolution).
        channel_mults: channels of each scale in units of ``C``, full resolution first; its length minus one is the
            number of down-samplings (the input is padded to a multiple of ``2^(len - 1)``).
        mid_blocks: residual blocks of the bottleneck. refine_blocks: residual blocks of each decoder refiner.
        act: ``relu`` or ``lrelu`` (LeakyReLU, slope 0.1).
    """

    dfd_layer = 'bottleneck'
    curriculum_stages = (('head', 'downs', 'bottleneck'), ('*',))  # train.curriculum's default

    def __init__(
        self,
        in_ch: int = 3,
        out_ch: int | None = None,
        width: int = 32,
        channel_mults: Sequence[int] = (1, 2, 3, 3),
        mid_blocks: int = 1,
        refine_blocks: int = 1,
        act: str = 'relu',
    ):
        super().__init__()
        self.check_options({
            'in_ch': in_ch, 'out_ch': out_ch, 'width': width, 'channel_mults': channel_mults,
            'mid_blocks': mid_blocks, 'refine_blocks': refine_blocks, 'act': act,
        })
        out_ch = in_ch if out_ch is None else out_ch
        self.in_ch = in_ch
        self.depth = len(channel_mults) - 1
        widths = [width * m for m in channel_mults]
        self.head = nn.Sequential(nn.Conv2d(in_ch, widths[0], 3, padding=1), activation(act, 'HybridMixUNet'))
        self.downs = nn.ModuleList(GatedDown(widths[i], widths[i + 1]) for i in range(self.depth))
        self.bottleneck = nn.Sequential(*[ResBlock(widths[-1], act) for _ in range(mid_blocks)])
        self.decoders = nn.ModuleList(
            DecoderStage(widths[i + 1], widths[i], in_ch, refine_blocks, act) for i in reversed(range(self.depth))
        )
        self.tail = nn.Conv2d(widths[0], out_ch, 3, padding=1)
        self.residual = Add(quantize_a=False)

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], path: str = 'HybridMixUNet') -> None:
        """The rules of the constructor's arguments (the ``network_g`` keys), for the constructor and the pre-flight
        check: ``in_ch``, ``out_ch``, ``width`` positive integers, ``mid_blocks`` and ``refine_blocks`` integers
        >= 0, ``channel_mults`` a list of at least two positive integers, ``act`` one of its names, ``out_ch ==
        in_ch``. An absent key (or ``~``) takes its default. Raises
        :class:`~qdr_plugin.option_rules.OptionsError` at ``<path>.<key>``.
        """
        in_ch = need_int(opt, path, 'in_ch', 1, default=3, example='3')
        out_ch = need_int(opt, path, 'out_ch', 1, default=in_ch, example='3')
        for key, minimum, example in _COUNTS:
            need_int(opt, path, key, minimum, example=example)
        need_choice(opt, path, 'act', ACTS)
        mults = opt.get('channel_mults')
        if mults is not None and not (isinstance(mults, (list, tuple)) and len(mults) >= 2
                                      and all(is_int(m) and m >= 1 for m in mults)):
            raise OptionsError(f'{path}.channel_mults', 'must be a list of at least two positive integers (one per '
                               'scale, full resolution first)', mults, 'Write channel_mults: [1, 2, 3, 3].')
        if out_ch != in_ch:
            raise OptionsError(f'{path}.out_ch', f'differs from in_ch ({in_ch}), but the global residual adds the '
                               'input to the output', out_ch, 'Remove out_ch (it defaults to in_ch).')

    @property
    def decoder_layers(self) -> list[str]:
        """Module names of the decoder stages, from the lowest resolution up (for decoder distillation)."""
        return [f'decoders.{i}' for i in range(self.depth)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple
        inp = F.pad(x, (0, pad_w, 0, pad_h), mode='replicate')  # unconditional: traced exports keep H, W dynamic
        images = [inp]
        for _ in range(self.depth - 1):
            images.append(F.interpolate(images[-1], scale_factor=0.5, mode='nearest'))
        feat = self.head(inp)
        skips = [feat]
        for down in self.downs:
            feat = down(feat)
            skips.append(feat)
        feat = self.bottleneck(skips.pop())
        for decoder, skip, image in zip(self.decoders, reversed(skips), reversed(images)):
            feat = decoder(feat, skip, image)
        out = self.residual(inp, self.tail(feat))
        return out[..., :h, :w].clamp(0.0, 1.0)
