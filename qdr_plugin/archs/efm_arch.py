r"""EFM: an edge-friendly U-Net with Learnable Degradation Gating (our reading of QDR's EFM and LDG).

Only INT8-friendly operations: 3x3 / 1x1 / depth-wise convolutions, ReLU (or LeakyReLU), additions, stride-2
convolution (or pixel-unshuffle) down, transposed convolution (or pixel-shuffle) up, additive skips (as in NAFNet:
one Add instead of a concatenation and a 1x1 fusion conv), a sigmoid gate, a global residual
``y = clamp(x + f(x), 0, 1)``. No normalisation, no attention, no custom autograd.

The default stem pixel-unshuffles the input by 2 (``stem='unshuffle'``): the U-Net runs at half resolution on four
times the channels, and the global residual is added there, before the final pixel-shuffle (``shuffle(a) +
shuffle(b) = shuffle(a + b)``). Fewer, wider tensors: INT8 kernels run them far better than 1- and 16-channel
full-resolution ones, and every convolution's output feeds exactly one quantizer, the pattern ONNX Runtime needs
to run it as an integer kernel.

Learnable Degradation Gating (LDG), at the end of every residual block:

.. math::

    g = \sigma\big(\mathrm{conv}_{1\times1}(\phi(\mathrm{dwconv}_{3\times3}(F)))\big) \in (0, 1)^{1 \times H \times W},
    \qquad F' = F \odot (1 + g) \;\; (\texttt{ldg\_mode='residual'}) \quad\text{or}\quad F' = F \odot g

a single-channel spatial gate that scales the features where the degradation is (``F + F g`` is computed as
``F (1 + g)``: one full-size multiply instead of a multiply and an add). Its temperature and bias are the
weight scale and bias of the 1x1 convolution (a separate scalar would be redundant and cost one more op); the bias
starts at ``ldg_bias_init`` so the gate starts half open.

The bottleneck (the lowest-resolution latent, before the first decoder up-sampling) is the module
``self.bottleneck``; :attr:`EFM.dfd_layer` names it for Decoder-Free Distillation and :attr:`EFM.decoder_layers`
names the decoder stages for the decoder-distillation ablation.

Inputs of any size: the forward pass pads ``H`` and ``W`` up to a multiple of ``2^depth`` (replicate) inside the
graph and crops the output back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.option_rules import OptionsError, is_number, need_bool, need_choice, need_int
from qdr_plugin.quant.ops import Add, Mul
from qdr_plugin.registry import register

ACTS = ('relu', 'lrelu')
"""``act`` of the U-Nets: ``nn.ReLU`` or ``nn.LeakyReLU`` with slope 0.1."""


def activation(kind: str, arch: str = 'EFM') -> nn.Module:
    """The activation ``act`` names (:data:`ACTS`); ``ValueError`` naming ``arch`` otherwise."""
    if kind == 'relu':
        return nn.ReLU(inplace=True)
    if kind == 'lrelu':
        return nn.LeakyReLU(0.1, inplace=True)
    raise ValueError(f"{arch}: act must be 'relu' or 'lrelu', got {kind!r}.")


class LDG(nn.Module):
    """Learnable Degradation Gating: ``F' = F * (1 + g)`` (or ``F * g``), ``g = sigmoid(conv1x1(act(dwconv3x3(F))))``.

    ``F`` is quantized once (its quantizer is shared with the depth-wise conv), so the conv that produces it feeds
    a single quantized tensor; the one-channel gate ``1 + g`` stays float: the multiply is a point-wise epilogue
    (TensorRT fuses it; ONNX Runtime's broadcasting float multiply is 5x faster than its integer one here).
    """

    def __init__(self, channels: int, act: str = 'relu', mode: str = 'residual', bias_init: float = 0.0):
        super().__init__()
        if mode not in ('residual', 'multiply'):
            raise ValueError(f"EFM: ldg_mode must be 'residual' or 'multiply', got {mode!r}.")
        self.mode = mode
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.act = activation(act)
        self.proj = nn.Conv2d(channels, 1, 1)
        nn.init.constant_(self.proj.bias, bias_init)
        self.offset = 1.0 if mode == 'residual' else 0.0
        self.mul = Mul(quantize_b=False)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.proj(self.act(self.dwconv(feat))))
        return self.mul(feat, gate + self.offset if self.offset else gate)


class ResBlock(nn.Module):
    """``x + LDG(conv3x3(act(conv3x3(x))))``."""

    def __init__(self, channels: int, act: str, ldg: bool, ldg_mode: str, ldg_bias_init: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = activation(act)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.ldg = LDG(channels, act, ldg_mode, ldg_bias_init) if ldg else nn.Identity()
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, self.ldg(self.conv2(self.act(self.conv1(x)))))


def _blocks(n: int, channels: int, act: str, ldg: bool, ldg_mode: str, ldg_bias_init: float) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels, act, ldg, ldg_mode, ldg_bias_init) for _ in range(n)])


class Down(nn.Module):
    """Halve the resolution, double the channels: stride-2 3x3 conv, or pixel-unshuffle + 1x1 conv."""

    def __init__(self, channels: int, mode: str, act: str):
        super().__init__()
        if mode == 'conv':
            self.body = nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), activation(act))
        elif mode == 'unshuffle':
            self.body = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(4 * channels, 2 * channels, 1), activation(act))
        else:
            raise ValueError(f"EFM: down must be 'conv' or 'unshuffle', got {mode!r}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Up(nn.Module):
    """Double the resolution, halve the channels: a 2x2 transposed conv, or a 1x1 conv + pixel-shuffle."""

    def __init__(self, channels: int, mode: str):
        super().__init__()
        if mode == 'deconv':
            self.body = nn.ConvTranspose2d(channels, channels // 2, 2, stride=2)
        elif mode == 'shuffle':
            self.body = nn.Sequential(nn.Conv2d(channels, 2 * channels, 1), nn.PixelShuffle(2))
        else:
            raise ValueError(f"EFM: up must be 'deconv' or 'shuffle', got {mode!r}.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DecoderStage(nn.Module):
    """Up-sample, add the encoder skip (a quantized Add), refine with residual blocks."""

    def __init__(self, channels: int, blocks: int, up: str, act: str, ldg: bool, ldg_mode: str, ldg_bias: float):
        super().__init__()
        self.up = Up(channels, up)
        self.skip = Add()
        self.blocks = _blocks(blocks, channels // 2, act, ldg, ldg_mode, ldg_bias)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.skip(self.up(x), skip))


_EFM_COUNTS = (('width', 1, '32'), ('depth', 1, '2'), ('enc_blocks', 0, '1'), ('dec_blocks', 0, '1'),
               ('mid_blocks', 0, '2'))
"""The EFM's count arguments: ``(key, minimum, example)``."""

_EFM_MODES = {
    'ldg_mode': ('residual', 'multiply'), 'act': ('relu', 'lrelu'), 'down': ('conv', 'unshuffle'),
    'up': ('deconv', 'shuffle'), 'stem': ('unshuffle', 'conv'),
}
"""The EFM's string arguments and their values."""


@register(ARCH_REGISTRY)
class EFM(nn.Module):
    """Edge-friendly U-Net with LDG (see the module docstring).

    Args:
        in_ch: input channels (1 gray, 3 RGB). out_ch: output channels (default ``in_ch``).
        width: channels at full resolution; level ``i`` has ``width * 2^i``.
        depth: number of down-samplings (3 gives 4 scales).
        enc_blocks / dec_blocks / mid_blocks: residual blocks per encoder level / decoder level / bottleneck.
        ldg: use Learnable Degradation Gating in every block. ldg_mode: ``residual`` or ``multiply``.
        act: ``relu`` or ``lrelu``. down: ``conv`` or ``unshuffle``. up: ``deconv`` or ``shuffle``.
        global_residual: ``y = x + f(x)`` (needs ``in_ch == out_ch``). clamp: clamp the output to [0, 1].
        stem: ``unshuffle`` (pixel-unshuffle by 2 before the head, pixel-shuffle after the global residual: the
            U-Net runs at half resolution) or ``conv`` (it starts at full resolution).
    """

    dfd_layer = 'bottleneck'
    curriculum_stages = (('head', 'encoders', 'downs', 'bottleneck'), ('*',))  # train.curriculum's default

    def __init__(
        self,
        in_ch: int = 1,
        out_ch: int | None = None,
        width: int = 32,
        depth: int = 2,
        enc_blocks: int = 1,
        dec_blocks: int = 1,
        mid_blocks: int = 2,
        ldg: bool = True,
        ldg_mode: str = 'residual',
        ldg_bias_init: float = 0.0,
        act: str = 'relu',
        down: str = 'conv',
        up: str = 'deconv',
        global_residual: bool = True,
        clamp: bool = True,
        stem: str = 'unshuffle',
    ):
        super().__init__()
        self.check_options({
            'in_ch': in_ch, 'out_ch': out_ch, 'width': width, 'depth': depth, 'enc_blocks': enc_blocks,
            'dec_blocks': dec_blocks, 'mid_blocks': mid_blocks, 'ldg': ldg, 'ldg_mode': ldg_mode,
            'ldg_bias_init': ldg_bias_init, 'act': act, 'down': down, 'up': up, 'global_residual': global_residual,
            'clamp': clamp, 'stem': stem,
        })
        out_ch = in_ch if out_ch is None else out_ch
        self.in_ch, self.depth, self.clamp = in_ch, depth, clamp
        self.stem = 2 if stem == 'unshuffle' else 1
        widths = [width * 2**i for i in range(depth + 1)]
        self.unshuffle = nn.PixelUnshuffle(2) if self.stem == 2 else nn.Identity()
        self.shuffle = nn.PixelShuffle(2) if self.stem == 2 else nn.Identity()
        self.head = nn.Conv2d(in_ch * self.stem**2, width, 3, padding=1)
        self.encoders = nn.ModuleList(
            _blocks(enc_blocks, widths[i], act, ldg, ldg_mode, ldg_bias_init) for i in range(depth)
        )
        self.downs = nn.ModuleList(Down(widths[i], down, act) for i in range(depth))
        self.bottleneck = _blocks(mid_blocks, widths[depth], act, ldg, ldg_mode, ldg_bias_init)
        self.decoders = nn.ModuleList(
            DecoderStage(widths[i + 1], dec_blocks, up, act, ldg, ldg_mode, ldg_bias_init)
            for i in reversed(range(depth))
        )
        self.tail = nn.Conv2d(width, out_ch * self.stem**2, 3, padding=1)
        self.residual = Add() if global_residual else None

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], path: str = 'EFM') -> None:
        """The rules of the constructor's arguments (the ``network_g`` keys), for the constructor and the pre-flight
        check: counts are integers (``in_ch``, ``out_ch``, ``width``, ``depth`` >= 1, block counts >= 0), switches
        ``true`` / ``false``, modes one of their names, ``out_ch == in_ch`` with ``global_residual``. An absent key
        (or ``~``) takes its default. Raises :class:`~qdr_plugin.option_rules.OptionsError` at ``<path>.<key>``.
        """
        in_ch = need_int(opt, path, 'in_ch', 1, default=1)
        out_ch = need_int(opt, path, 'out_ch', 1, default=in_ch)
        for key, minimum, example in _EFM_COUNTS:
            need_int(opt, path, key, minimum, example=example)
        for key in ('ldg', 'clamp'):
            need_bool(opt, path, key)
        for key, choices in _EFM_MODES.items():
            need_choice(opt, path, key, choices)
        bias = opt.get('ldg_bias_init')
        if bias is not None and not is_number(bias):
            raise OptionsError(f'{path}.ldg_bias_init', 'must be a number', bias, 'Write ldg_bias_init: 0.0.')
        if need_bool(opt, path, 'global_residual', default=True) and out_ch != in_ch:
            raise OptionsError(f'{path}.out_ch', f'differs from in_ch ({in_ch}), but global_residual adds the input '
                               'to the output', out_ch, 'Remove out_ch (it defaults to in_ch), or set '
                               'global_residual: false.')

    @property
    def decoder_layers(self) -> list[str]:
        """Module names of the decoder stages, from the lowest resolution up (for decoder distillation)."""
        return [f'decoders.{i}' for i in range(self.depth)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        multiple = self.stem * 2**self.depth
        pad_h, pad_w = (multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple
        inp = F.pad(x, (0, pad_w, 0, pad_h), mode='replicate')  # unconditional: traced exports keep H, W dynamic
        inp = self.unshuffle(inp)
        feat = self.head(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            feat = encoder(feat)
            skips.append(feat)
            feat = down(feat)
        feat = self.bottleneck(feat)
        for decoder, skip in zip(self.decoders, reversed(skips)):
            feat = decoder(feat, skip)
        out = self.tail(feat)
        if self.residual is not None:
            out = self.residual(inp, out)
        out = self.shuffle(out)[..., :h, :w]
        return out.clamp(0.0, 1.0) if self.clamp else out
