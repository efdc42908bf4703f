"""RestormerHybrid: a Restormer whose chosen transformer blocks are state-space surrogates (:class:`SSMBlock`).

``surrogates`` lists the blocks to replace, by module name (``latent.3``) or by stage (``latent``: all its
blocks); every other block stays a Restormer transformer block. The ``state_dict`` keys of the transformer blocks
and of every other layer are the Restormer's, and a surrogate's keys are the :class:`SSMBlock`'s under the replaced
block's name (``latent.3.in_proj.weight``), so a teacher checkpoint plus a distilled surrogate file assemble into
a hybrid checkpoint key for key (``qdr_plugin.hybrid.assemble``). ``basicsr hybrid search`` writes the chosen
``surrogates`` list; with it, ``network_g: {type: RestormerHybrid, ...}`` fine-tunes with ``basicsr train`` and
quantizes with QDR like any arch.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from basicsr.utils.registry import ARCH_REGISTRY

from qdr_plugin.option_rules import OptionsError, did_you_mean, need_int, need_number
from qdr_plugin.registry import register

from .restormer_arch import STAGES, Restormer, block_names
from .ssm_arch import SSMBlock

MAX_SCAN_STEPS = 12
"""Doubling steps of the scan at most: exact over 4096 pixels along a row or column."""


def expand_surrogates(surrogates: Sequence[str], names: Sequence[str]) -> list[str]:
    """The block names that ``surrogates`` selects (a stage name selects all its blocks), in forward order."""
    chosen = set()
    for entry in surrogates:
        chosen.update(n for n in names if n == entry or n.rsplit('.', 1)[0] == entry)
    return [n for n in names if n in chosen]


@register(ARCH_REGISTRY)
class RestormerHybrid(Restormer):
    """A :class:`Restormer` (same arguments) with the blocks in ``surrogates`` replaced by :class:`SSMBlock`.

    Args:
        surrogates: block names (``encoder_level1.0``) or stage names (``latent``) to replace; empty: a Restormer.
        ssm_expand: the surrogates' scan channels per input channel. scan_steps: their doubling steps (exact over
            ``2^scan_steps`` pixels along each scan order).
        (the rest): :class:`Restormer`'s.
    """

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
        surrogates: Sequence[str] = (),
        ssm_expand: float = 1.0,
        scan_steps: int = 8,
    ):
        super().__init__(inp_channels, out_channels, dim, num_blocks, num_refinement_blocks, heads,
                         ffn_expansion_factor, bias, LayerNorm_type, dual_pixel_task)
        self.check_surrogate_options({'surrogates': surrogates, 'ssm_expand': ssm_expand, 'scan_steps': scan_steps,
                                      'num_blocks': num_blocks, 'num_refinement_blocks': num_refinement_blocks})
        self.surrogates = expand_surrogates(surrogates, self.block_names())
        for name in self.surrogates:
            stage, index = name.rsplit('.', 1)
            block = getattr(self, stage)[int(index)]
            getattr(self, stage)[int(index)] = SSMBlock(block.attn.qkv.in_channels, ssm_expand, scan_steps, bias,
                                                        LayerNorm_type)

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], path: str = 'RestormerHybrid') -> None:
        """:meth:`Restormer.check_options`, then :meth:`check_surrogate_options`."""
        Restormer.check_options({k: v for k, v in opt.items() if k not in ('surrogates', 'ssm_expand', 'scan_steps')},
                                path)
        cls.check_surrogate_options(opt, path)

    @classmethod
    def check_surrogate_options(cls, opt: Mapping[str, Any], path: str = 'RestormerHybrid') -> None:
        """``surrogates`` a list of block or stage names of this configuration, ``ssm_expand`` a number > 0,
        ``scan_steps`` an integer from 1 to :data:`MAX_SCAN_STEPS`."""
        need_number(opt, path, 'ssm_expand', above=True, example='1.0')
        need_int(opt, path, 'scan_steps', 1, maximum=MAX_SCAN_STEPS, example='8')
        surrogates = opt.get('surrogates')
        if surrogates is None:
            return
        if isinstance(surrogates, str) or not isinstance(surrogates, Sequence):
            raise OptionsError(f'{path}.surrogates', 'must be a list of block or stage names', surrogates,
                               'Write surrogates: [latent, decoder_level3.0] (or [] for none).')
        defaults = inspect.signature(Restormer).parameters  # an absent key (or ~) takes Restormer's default
        names = block_names(*(defaults[key].default if opt.get(key) is None else opt[key]
                              for key in ('num_blocks', 'num_refinement_blocks')))
        valid = [*STAGES, *names]
        for entry in surrogates:
            if entry not in valid:
                naming = f' Blocks are <stage>.<index>, the stages {", ".join(STAGES)}.' if len(valid) > 25 else ''
                raise OptionsError(f'{path}.surrogates', f'{entry!r} is no block or stage of this configuration',
                                   list(surrogates), did_you_mean(entry, valid) + naming)
