r"""DnCNN (Zhang et al., 2017), laid out exactly like the published PyTorch model so its weights load strictly.

``self.dncnn`` is one ``nn.Sequential``::

    Conv(in_ch, width, 3, bias) ReLU,
    (depth - 2) x [Conv(width, width, 3, no bias) BatchNorm(width, eps=1e-4, momentum=0.95) ReLU],
    Conv(width, out_ch, 3, no bias)

so the state-dict keys are ``dncnn.0.weight``, ``dncnn.0.bias``, ``dncnn.2.weight``, ``dncnn.3.weight`` /
``bias`` / ``running_mean`` / ``running_var`` / ``num_batches_tracked``, ..., ``dncnn.{3 * depth - 4}.weight``,
those of ``cszn/DnCNN``'s ``model.pth`` (see ``tools/convert_dncnn.py``). The network predicts the noise; the
output is ``x - dncnn(x)``, written with :class:`qdr_plugin.quant.ops.Sub` (``quantize_a=False``) so that after
:func:`qdr_plugin.quant.quantize_model` the predicted noise is quantized (the last convolution runs in INT8) and
``x`` is not: rounding the input on its way to the output would add noise no training can remove. With
``bn=False`` the middle convolutions carry a bias instead (``[Conv ReLU]`` blocks). The BatchNorms sit right after
their convolutions in the ``nn.Sequential``, so :func:`qdr_plugin.quant.fold_batchnorm` folds all of them before QAT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.option_rules import OptionsError, need_bool, need_int, need_number
from qdr_plugin.quant.ops import Sub
from qdr_plugin.registry import register


@register(ARCH_REGISTRY)
class DnCNN(nn.Module):
    """DnCNN: a plain stack of 3x3 conv + BatchNorm + ReLU that predicts the noise (see the module docstring).

    Args:
        in_ch: input channels (1 gray, 3 RGB). out_ch: output channels (default ``in_ch``).
        depth: number of convolutions (17 for DnCNN-S, 20 for DnCNN-B); at least 2.
        width: channels of the hidden layers.
        bn: BatchNorm after every middle convolution (the published models have it).
        bn_eps: the BatchNorms' epsilon (1e-4 in the published models; their momentum is 0.95).
        residual: output ``x - dncnn(x)`` (residual learning, needs ``out_ch == in_ch``); ``False``: ``dncnn(x)``.

    DnCNN has no U-Net bottleneck, so :attr:`dfd_layer` (the feature Decoder-Free Distillation compares) is the
    output of the middle conv block's ReLU: ``dncnn.25`` for the default ``depth=17`` (block 8 of 15, the deepest
    feature that still has half of the network after it to turn it into the noise estimate). An instance sets it
    for its own ``depth`` / ``bn``; ``train.dfd_opt.layer`` in the options overrides it.
    """

    dfd_layer = 'dncnn.25'

    def __init__(
        self,
        in_ch: int = 1,
        out_ch: int | None = None,
        depth: int = 17,
        width: int = 64,
        bn: bool = True,
        bn_eps: float = 1e-4,
        residual: bool = True,
    ):
        super().__init__()
        self.check_options({'in_ch': in_ch, 'out_ch': out_ch, 'depth': depth, 'width': width, 'bn': bn,
                            'bn_eps': bn_eps, 'residual': residual})
        out_ch = in_ch if out_ch is None else out_ch
        self.in_ch = in_ch
        layers: list[nn.Module] = [nn.Conv2d(in_ch, width, 3, padding=1, bias=True), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(width, width, 3, padding=1, bias=not bn))
            if bn:
                layers.append(nn.BatchNorm2d(width, eps=bn_eps, momentum=0.95))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(width, out_ch, 3, padding=1, bias=False))
        self.dncnn = nn.Sequential(*layers)
        self.sub = Sub(quantize_a=False) if residual else None
        block = 3 if bn else 2
        middle = (depth - 3) // 2  # the middle one of the depth - 2 conv blocks (the first, if there are none)
        self.dfd_layer = f'dncnn.{1 + block * (middle + 1)}' if depth > 2 else 'dncnn.1'

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], path: str = 'DnCNN') -> None:
        """The rules of the constructor's arguments (the ``network_g`` keys), for the constructor and the pre-flight
        check: ``in_ch``, ``out_ch``, ``width`` integers >= 1, ``depth`` >= 2, ``bn_eps`` > 0, ``bn`` and
        ``residual`` ``true`` / ``false``, ``out_ch == in_ch`` with ``residual``. An absent key (or ``~``) takes its
        default. Raises :class:`~qdr_plugin.option_rules.OptionsError` at ``<path>.<key>``.
        """
        in_ch = need_int(opt, path, 'in_ch', 1, default=1)
        out_ch = need_int(opt, path, 'out_ch', 1, default=in_ch)
        need_int(opt, path, 'depth', 2, example='17')
        need_int(opt, path, 'width', 1, example='64')
        need_number(opt, path, 'bn_eps', above=True, example='1.0e-4')
        need_bool(opt, path, 'bn')
        if need_bool(opt, path, 'residual', default=True) and out_ch != in_ch:
            raise OptionsError(f'{path}.out_ch', f'differs from in_ch ({in_ch}), but residual subtracts the '
                               'predicted noise from the input (out_ch == in_ch)', out_ch,
                               'Remove out_ch (it defaults to in_ch), or set residual: false.')

    @property
    def decoder_layers(self) -> list[str]:
        """The activations of two blocks after the bottleneck (half-way to the end, and the last one), the
        "decoder" features of the decoder-distillation ablation (``dfd_opt.decoder_stages``)."""
        block = 3 if any(isinstance(m, nn.BatchNorm2d) for m in self.dncnn) else 2
        blocks = (len(self.dncnn) - 3) // block
        first = int(self.dfd_layer.split('.')[1]) // block + 1
        return [f'dncnn.{1 + block * i}' for i in dict.fromkeys((first + (blocks - first) // 2, blocks))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.dncnn(x)
        return self.sub(x, noise) if self.sub is not None else noise
