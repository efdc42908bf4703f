r"""The QDR parts of one training step, for any front that owns the optimizer and the data.

:meth:`QDRStep.losses` computes, for a batch ``(x, gt)`` and the student ``S`` (with its teacher ``T`` once QAT has
started)

.. math::

    L_{rec} = L_{pix}(S(x), y), \quad y = gt \text{ (or } T(x) \text{ with } \texttt{pixel\_target: teacher)}

    L_{kd} = \sum_{l \in \text{DFD layers}} d(F_l(S, x), F_l(T, x))
             + L_{rkd}(\{F_l(S, x)\}, \{F_l(T, x)\}) + d(S(x), T(x))

(each term only when its loss is given; DFD's first layer is the bottleneck :math:`F_b`), and the total
:math:`L = L_{rec} + L_{kd}`, or :math:`w_{rec} L_{rec} + w_{kd} L_{kd}` with LMR's learned weights. After the
optimizer's step, :meth:`QDRStep.after_update` projects the quantizer step sizes away from zero and updates LMR (its
gradient-norm measurements averaged over the ranks first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from qdr_plugin.core.distributed import sync_lmr
from qdr_plugin.core.feature_capture import FeatureCapture
from qdr_plugin.errors import UserError
from qdr_plugin.quant import project_step_sizes

if TYPE_CHECKING:  # the LMR module is built by the front; only its type is named here
    from qdr_plugin.losses.lmr import LearnableMagnitudeReweighting

__all__ = ['QDRStep', 'StepLosses']


@dataclass
class StepLosses:
    """One step's losses: the student's ``output``, the ``total`` to back-propagate, the named terms ``parts``
    (``l_pix``, ``l_dfd``, ``l_rkd``, ``l_okd``) and whether a distillation term was in it (``distilled``)."""

    output: torch.Tensor
    total: torch.Tensor
    parts: OrderedDict[str, torch.Tensor]
    distilled: bool


class QDRStep:
    """The losses of QDR training and what follows the optimizer's step.

    Args:
        cri_pix: the reconstruction loss ``L_pix(output, target)``.
        cri_dfd: DFD's feature loss ``d`` (``None``: no DFD).
        cri_okd: the output distillation loss (``None``: none).
        cri_rkd: the relational loss over lists of features (``None``: none).
        lmr: LMR's weights (``None``: the plain sum).
        pixel_target: ``'gt'`` or ``'teacher'`` (the reconstruction target once a teacher exists).

    The compared layers are named when the teacher arrives (:meth:`attach`).
    """

    def __init__(
        self,
        cri_pix: nn.Module,
        cri_dfd: nn.Module | None = None,
        cri_okd: nn.Module | None = None,
        cri_rkd: nn.Module | None = None,
        lmr: LearnableMagnitudeReweighting | None = None,
        pixel_target: str = 'gt',
    ) -> None:
        self.cri_pix, self.cri_dfd, self.cri_okd, self.cri_rkd, self.lmr = cri_pix, cri_dfd, cri_okd, cri_rkd, lmr
        self.pixel_target = pixel_target
        self.dfd_layers: list[str] = []
        self.relational_layers: list[str] = []
        self.capture_s: FeatureCapture | None = None
        self.capture_t: FeatureCapture | None = None

    @property
    def distills(self) -> bool:
        """Whether any distillation loss is configured."""
        return self.cri_dfd is not None or self.cri_okd is not None or self.cri_rkd is not None

    def attach(
        self, student: nn.Module, teacher: nn.Module, dfd_layers: Sequence[str], relational_layers: Sequence[str],
        option_key: str = 'train.dfd_opt.layer',
    ) -> None:
        """Capture the compared layers of the bare ``student`` and of ``teacher`` (after the switch to QAT):
        ``dfd_layers`` (the bottleneck first) for DFD, ``relational_layers`` for the relational loss."""
        self.dfd_layers, self.relational_layers = list(dfd_layers), list(relational_layers)
        layers = list(dict.fromkeys(self.dfd_layers + self.relational_layers))
        self.capture_s = self.capture_t = None
        if layers:
            self.capture_s = FeatureCapture(student, layers, option_key)
            self.capture_t = FeatureCapture(teacher, layers, option_key)

    def discard_features(self) -> None:
        """Drop the features captured by a forward pass that is not a training step (validation, a check)."""
        if self.capture_s is not None:
            self.capture_s.pop()
            self.capture_t.pop()

    def losses(self, net: nn.Module, teacher: nn.Module | None, lq: torch.Tensor, gt: torch.Tensor) -> StepLosses:
        """Forward ``lq`` through ``net`` (bare or DDP-wrapped) and, when needed, ``teacher``; the losses above."""
        output = net(lq)
        use_teacher = teacher is not None and self.pixel_target == 'teacher'
        teacher_out = None
        if teacher is not None and (use_teacher or self.distills):
            with torch.no_grad():
                teacher_out = teacher(lq)
        parts: OrderedDict[str, torch.Tensor] = OrderedDict()
        l_rec = self.cri_pix(output, teacher_out if use_teacher else gt)
        parts['l_pix'] = l_rec
        l_kd, bottleneck = self._distillation(parts, output, teacher_out)
        if l_kd is None:
            total = l_rec
        elif self.lmr is not None:
            total = self.lmr.combine(l_rec, l_kd, bottleneck)
        else:
            total = l_rec + l_kd
        return StepLosses(output, total, parts, l_kd is not None)

    def _distillation(
        self, parts: OrderedDict, output: torch.Tensor, teacher_out: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``L_kd`` and the student bottleneck, or ``(None, None)`` before QAT or without distillation losses."""
        if teacher_out is None or not self.distills:
            return None, None
        l_kd, bottleneck = 0.0, None
        student, teacher = (self.capture_s.pop(), self.capture_t.pop()) if self.capture_s is not None else ({}, {})
        if self.cri_dfd is not None:
            bottleneck = student[self.dfd_layers[0]]
            l_dfd = sum(self.cri_dfd(student[name], teacher[name]) for name in self.dfd_layers)
            parts['l_dfd'] = l_dfd
            l_kd = l_kd + l_dfd
        if self.cri_rkd is not None:
            layers = self.relational_layers
            l_rkd = self.cri_rkd([student[name] for name in layers], [teacher[name] for name in layers])
            parts['l_rkd'] = l_rkd
            l_kd = l_kd + l_rkd
        if self.cri_okd is not None:
            l_okd = self.cri_okd(output, teacher_out)
            parts['l_okd'] = l_okd
            l_kd = l_kd + l_okd
        return l_kd, bottleneck

    @staticmethod
    def check_finite(losses: StepLosses, who: str, where: str, fix: str) -> None:
        """Raise :class:`UserError` (``<who>: the loss is not finite at <where> (<terms>); <fix>``) if the total loss
        is NaN or infinite."""
        if not torch.isfinite(losses.total):
            values = {k: float(v) for k, v in losses.parts.items()}
            raise UserError(f'{who}: the loss is not finite at {where} ({values}); {fix}')

    def after_update(self, bare: nn.Module, quantized: bool, distilled: bool) -> dict[str, float]:
        """After the optimizer's step: project the step sizes of the bare, ``quantized`` network (no step size
        through zero, :func:`qdr_plugin.quant.project_step_sizes`), then, if the step ``distilled``, update LMR
        (rank-averaged measurements). Returns LMR's log values (empty without an update)."""
        if quantized:
            project_step_sizes(bare)
        if not distilled or self.lmr is None:
            return {}
        sync_lmr(self.lmr)
        self.lmr.step()
        return self.lmr.log_values()
