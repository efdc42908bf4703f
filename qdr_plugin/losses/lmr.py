r"""Learnable Magnitude Reweighting (LMR), our reading of QDR's loss balancing.

The student's loss has a reconstruction term :math:`L_{rec}` and a distillation term :math:`L_{kd}` (DFD, plus
output / decoder KD in the ablations). LMR keeps two positive, learnable weights :math:`w_i = e^{\theta_i}` and
trains with :math:`L = w_{rec} L_{rec} + w_{kd} L_{kd}`. Two rules update :math:`\theta`:

``gradnorm`` (default), GradNorm-style balancing at the bottleneck :math:`F_b`, where both terms meet.
With :math:`G_i = \lVert \partial L_i / \partial F_b \rVert_2` measured in the same backward pass (a tensor hook on
:math:`F_b` gives :math:`\sum_i w_i \partial L_i/\partial F_b`; :math:`\partial L_{kd}/\partial F_b` is one cheap
extra ``autograd.grad``), the weights minimise

.. math::

    L_{lmr} = \sum_i \big| w_i G_i - t_i \bar G \big|, \qquad \bar G = \tfrac{1}{2}\textstyle\sum_j w_j G_j,
    \quad t_{rec} = \tfrac{2}{1+r},\; t_{kd} = \tfrac{2r}{1+r}

(:math:`\bar G` detached, :math:`r` = ``target_ratio``), so that neither term's gradient magnitude drowns the
other. The weights are excluded from :math:`L`'s own gradient (else they would collapse to 0), renormalised to
:math:`\sum_i w_i = 2` after every update and kept in ``[w_min, w_max]``.

``uncertainty`` (Kendall et al. 2018): :math:`L = \sum_i e^{-\theta_i} L_i + \theta_i`, learned with :math:`L`.

Guards: a non-finite gradient norm skips the update; :math:`\theta` is clamped, so weights stay finite.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from qdr_plugin.option_rules import OptionsError, check_keys, need_choice, need_number

LMR_TYPES = ('gradnorm', 'uncertainty')

_EXAMPLES = {'lr': '0.025', 'w_min': '1.0e-4', 'w_max': '1.0e+4', 'target_ratio': '1.0', 'init_kd_weight': '1.0'}


class LearnableMagnitudeReweighting(nn.Module):
    """Two learnable positive loss weights (reconstruction, distillation) with their own small Adam optimizer."""

    def __init__(
        self,
        type: str = 'gradnorm',
        lr: float = 0.025,
        w_min: float = 1e-4,
        w_max: float = 1e4,
        target_ratio: float = 1.0,
        init_kd_weight: float = 1.0,
    ):
        super().__init__()
        self.check_options(
            {'type': type, 'lr': lr, 'w_min': w_min, 'w_max': w_max, 'target_ratio': target_ratio,
             'init_kd_weight': init_kd_weight}
        )
        self.type = type
        self.bounds = (math.log(w_min), math.log(w_max))
        self.target_ratio = target_ratio
        init = torch.tensor([0.0, math.log(init_kd_weight)])
        self.log_weights = nn.Parameter(init)
        self.optimizer = torch.optim.Adam([self.log_weights], lr=lr)
        self.grad_norms = torch.full((2,), float('nan'))
        self._feature_grad: torch.Tensor | None = None
        self._kd_grad: torch.Tensor | None = None

    @classmethod
    def check_options(cls, opt: Mapping[str, Any], path: str = 'train.lmr_opt') -> None:
        """The rules of ``train.lmr_opt`` (the constructor's keyword arguments; an absent key takes its default,
        ``~`` is refused): ``type`` one of :data:`LMR_TYPES`, ``lr``, ``target_ratio``, ``init_kd_weight``,
        ``w_min`` and ``w_max`` numbers > 0 with ``w_min < w_max``. Raises
        :class:`~qdr_plugin.option_rules.OptionsError` at ``<path>.<key>``."""
        defaults = {name: param.default for name, param in inspect.signature(cls).parameters.items()}
        check_keys(opt, path, defaults)
        values = {**defaults, **opt}
        need_choice(values, path, 'type', LMR_TYPES, required=True)
        for key, example in _EXAMPLES.items():
            need_number(values, path, key, above=True, required=True, example=example)
        if not values['w_min'] < values['w_max']:
            raise OptionsError(f'{path}.w_min', f"must be below w_max ({values['w_max']})", values['w_min'],
                               'Keep 0 < w_min < w_max, e.g. w_min: 1.0e-4, w_max: 1.0e+4.')

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.detach().exp()

    def combine(self, l_rec: torch.Tensor, l_kd: torch.Tensor, bottleneck: torch.Tensor | None) -> torch.Tensor:
        """The weighted total loss; for ``gradnorm`` it also hooks ``bottleneck`` to measure the gradient norms."""
        if self.type == 'uncertainty':
            theta = self.log_weights
            return torch.exp(-theta[0]) * l_rec + theta[0] + torch.exp(-theta[1]) * l_kd + theta[1]
        if bottleneck is None or not bottleneck.requires_grad:
            raise RuntimeError('LMR (gradnorm) needs the student bottleneck feature in the autograd graph.')
        w = self.weights
        (kd_grad,) = torch.autograd.grad(l_kd, bottleneck, retain_graph=True, allow_unused=True)
        self._kd_grad = torch.zeros_like(bottleneck) if kd_grad is None else kd_grad
        bottleneck.register_hook(self._store_feature_grad)
        return w[0] * l_rec + w[1] * l_kd

    def _store_feature_grad(self, grad: torch.Tensor) -> None:
        self._feature_grad = grad.detach()

    @torch.no_grad()
    def _clamp_and_normalise(self) -> None:
        if self.type == 'gradnorm':
            self.log_weights.sub_(torch.logsumexp(self.log_weights, 0) - math.log(2.0))
        self.log_weights.clamp_(*self.bounds)

    def step(self) -> None:
        """Update the weights after the main ``backward()`` (call once per iteration)."""
        if self.type == 'uncertainty':
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._clamp_and_normalise()
            return
        if self._feature_grad is None or self._kd_grad is None:
            return
        w = self.weights
        g_kd = self._kd_grad.norm()
        g_rec = ((self._feature_grad - w[1] * self._kd_grad) / w[0]).norm()
        self._feature_grad = self._kd_grad = None
        norms = torch.stack([g_rec, g_kd])
        self.grad_norms = norms
        if not torch.isfinite(norms).all():
            return
        weighted = self.log_weights.exp() * norms
        mean = weighted.detach().mean()
        r = self.target_ratio
        target = torch.tensor([2.0 / (1.0 + r), 2.0 * r / (1.0 + r)]) * mean
        loss = (weighted - target).abs().sum()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self._clamp_and_normalise()

    def log_values(self) -> dict[str, float]:
        """Scalars for the training log and TensorBoard."""
        w = self.weights
        out = {'lmr_w_rec': float(w[0]), 'lmr_w_kd': float(w[1])}
        if self.type == 'gradnorm':
            out.update(lmr_gnorm_rec=float(self.grad_norms[0]), lmr_gnorm_kd=float(self.grad_norms[1]))
        return out
