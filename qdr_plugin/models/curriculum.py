"""CR-QAT's curriculum: quantization-aware training in ordered stages along the data flow (``train.curriculum``).

The network's modules are split into stages :math:`S_1 .. S_K` by ``fnmatch`` patterns of module names (a module
belongs to the first stage with a pattern matching its name or the name of one of its ancestors). The QAT iterations
:math:`Q` (``total_iter`` minus the QAT start) are split by the ``budget`` ratios :math:`b_k`: stage :math:`k` runs
:math:`Q \\, b_k / \\sum_j b_j` iterations. During stage :math:`k` the modules of :math:`S_1 .. S_k` are quantized
and train; the modules of the later stages run in FP32 (their quantizers off) with their parameters frozen, so the
reconstruction loss reaches the quantized early stages through a float, fixed remainder of the network. The
distillation terms stay on throughout: those of the earlier stages act as regularisers while the later ones train.

Default stages come from the arch (``curriculum_stages``: for a U-Net, encoder and bottleneck, then decoder); the
default budget is CR-QAT's 1/3 then 2/3 for two stages and an equal split otherwise. Plain PyTorch: the state is the
stage index, a function of the iteration, so a resumed run re-enters the same stage.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from torch import nn

from qdr_plugin.option_rules import MISSING, OptionsError, check_keys, is_number
from qdr_plugin.quant.fake_quant import FakeQuantizer

CURRICULUM_KEYS = ('stages', 'budget')


def default_budget(stages: int) -> list[float]:
    """CR-QAT's 1/3 then 2/3 for two stages; an equal split otherwise."""
    return [1.0, 2.0] if stages == 2 else [1.0] * stages


def check_curriculum_options(block: Mapping[str, Any], path: str = 'train.curriculum') -> None:
    """The shape of ``train.curriculum``: ``stages`` a list of at least two lists of name patterns, ``budget`` one
    positive number per stage."""
    check_keys(block, path, CURRICULUM_KEYS)
    stages = block.get('stages')
    if stages is not None and not (isinstance(stages, list) and len(stages) >= 2 and all(
            isinstance(stage, list) and stage and all(isinstance(p, str) and p for p in stage) for stage in stages)):
        raise OptionsError(f'{path}.stages', 'must be a list of at least two lists of module-name patterns', stages,
                           "Write e.g. stages: [[head, 'encoders.*', 'downs.*', 'bottleneck*'], ['*']].")
    budget = block.get('budget')
    if budget is not None:
        count = len(stages) if stages is not None else None
        if not (isinstance(budget, list) and all(is_number(b) and b > 0 for b in budget)
                and (count is None or len(budget) == count)):
            raise OptionsError(f'{path}.budget', 'must be one positive number per stage (shares of the QAT '
                               'iterations)', budget, 'Write e.g. budget: [1, 2] (a third, then two thirds).')


class Curriculum:
    """The stages of one network (see the module docstring): which module trains and is quantized when."""

    def __init__(self, block: Mapping[str, Any], net: nn.Module, path: str = 'train.curriculum') -> None:
        check_curriculum_options(block, path)
        stages = block.get('stages') or getattr(net, 'curriculum_stages', None)
        if stages is None:
            raise OptionsError(f'{path}.stages', f'is not set and {type(net).__name__} names no default stages',
                               MISSING, "Write stages: [[<encoder patterns>], ['*']] (names as in "
                               'model.named_modules()).')
        self.stages = [list(stage) for stage in stages]
        if len(self.stages) < 2:
            raise OptionsError(f'{path}.stages', 'needs at least two stages', self.stages, "Add ['*'] as the last.")
        budget = block.get('budget') or default_budget(len(self.stages))
        if len(budget) != len(self.stages):
            raise OptionsError(f'{path}.budget', f'needs one share per stage ({len(self.stages)})', budget,
                               f'Write budget: {default_budget(len(self.stages))}.')
        self.budget = [float(b) for b in budget]
        self.path = path
        self.owner = self.assign(net)
        self.stage: int | None = None

    def _stage_of(self, name: str) -> int | None:
        parts = name.split('.')
        prefixes = ['.'.join(parts[:i]) for i in range(1, len(parts) + 1)]
        for k, patterns in enumerate(self.stages):
            if any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes for p in patterns):
                return k
        return None

    def assign(self, net: nn.Module) -> dict[str, int]:
        """Stage index of every module of ``net`` that holds parameters or is a quantizer; an
        :class:`~qdr_plugin.option_rules.OptionsError` when a module is in no stage or a stage holds none."""
        path = self.path
        owner = {}
        for name, module in net.named_modules():
            if not name or not (isinstance(module, FakeQuantizer) or any(True for _ in module.parameters(False))):
                continue
            stage = self._stage_of(name)
            if stage is None:
                raise OptionsError(f'{path}.stages', f'no stage holds module {name!r} of {type(net).__name__}',
                                   self.stages, "Give the last stage the pattern '*' (everything not in an earlier "
                                   'stage).')
            owner[name] = stage
        for k in range(len(self.stages)):
            if k not in owner.values():
                raise OptionsError(f'{path}.stages', f'stage {k + 1} holds no module of {type(net).__name__} (an '
                                   'earlier stage takes all its matches)', self.stages[k],
                                   'Use patterns of module names as in model.named_modules().')
        return owner

    def stage_at(self, iteration: int, qat_start: int, total_iter: int) -> int:
        """The stage (0-based) of ``iteration`` (1-based, as basicsr counts) for QAT from ``qat_start`` to
        ``total_iter``."""
        done = iteration - qat_start - 1
        length = max(total_iter - qat_start, 1)
        bound = 0.0
        for k, share in enumerate(self.budget):
            bound += share / sum(self.budget) * length
            if done < bound:
                return k
        return len(self.budget) - 1

    def apply(self, net: nn.Module, stage: int) -> bool:
        """Quantize and train the modules of stages ``0..stage``, keep the later ones FP32 and frozen; returns
        whether the stage changed. The first call after quantization assigns the quantizers to their stages."""
        if stage == self.stage:
            return False
        if self.stage is None:
            self.owner = self.assign(net)
        modules = dict(net.named_modules())
        for name, owner in self.owner.items():
            active = owner <= stage
            module = modules[name]
            if isinstance(module, FakeQuantizer):
                module.enabled = active
            for parameter in module.parameters(False):
                parameter.requires_grad_(active)
        self.stage = stage
        return True

    def describe(self, stage: int) -> str:
        """``stage 1 of 2 (head, encoders.*, ...)``: for the log."""
        return f'stage {stage + 1} of {len(self.stages)} ({", ".join(self.stages[stage])})'

