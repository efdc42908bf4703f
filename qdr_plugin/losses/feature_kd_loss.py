r"""Feature-distillation distances for ``train.dfd_opt``: PKD (Pearson-correlation KD, as CR-QAT distils its
backbone) and a relational pairwise-similarity KD (CR-QAT's TPSD with feature tokens as anchors in place of text
prompts).

Both take a student and a teacher feature map of the same shape ``N x C x H x W``, or two equally long lists or
tuples of such pairs (the loss is then the mean over the pairs). The teacher is detached inside the loss, so the
gradient reaches the student only. A shape mismatch is a :class:`ValueError` naming both shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from qdr_plugin.registry import register

REDUCTIONS = ('mean', 'sum')
ANCHORS = ('self', 'teacher')

Features = torch.Tensor | Sequence[torch.Tensor]


def _shape(x: torch.Tensor) -> str:
    return 'x'.join(str(d) for d in x.shape)


def _check_pair(loss: str, student: torch.Tensor, teacher: torch.Tensor) -> None:
    if student.dim() != 4 or teacher.dim() != 4:
        raise ValueError(f'{loss}: features must be N x C x H x W, got student {_shape(student)} and teacher '
                         f'{_shape(teacher)}.')
    if student.shape == teacher.shape:
        return
    parts = [('batch size', 0, 1), ('channels', 1, 2), ('spatial size', 2, 4)]
    differ = ', '.join(part for part, a, b in parts if student.shape[a:b] != teacher.shape[a:b])
    raise ValueError(f'{loss}: student feature {_shape(student)} and teacher feature {_shape(teacher)} differ in '
                     f'{differ}; distil a student layer with the shape of its teacher layer.')


class _FeatureKDLoss(nn.Module):
    """The common part: options, the list handling, the shape check and the detached teacher."""

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f'{type(self).__name__}: unsupported reduction {reduction!r}; use one of {REDUCTIONS}.')
        self.loss_weight = loss_weight
        self.reduction = reduction

    def forward(self, student_feat: Features, teacher_feat: Features) -> torch.Tensor:
        name = type(self).__name__
        if isinstance(student_feat, torch.Tensor) and isinstance(teacher_feat, torch.Tensor):
            pairs = [(student_feat, teacher_feat)]
        elif isinstance(student_feat, (list, tuple)) and isinstance(teacher_feat, (list, tuple)):
            if not student_feat or len(student_feat) != len(teacher_feat):
                raise ValueError(f'{name}: needs as many teacher features as student features (at least one), got '
                                 f'{len(student_feat)} student and {len(teacher_feat)} teacher features.')
            pairs = list(zip(student_feat, teacher_feat))
        else:
            raise ValueError(f'{name}: student and teacher features must both be tensors or both be lists, got '
                             f'{type(student_feat).__name__} and {type(teacher_feat).__name__}.')
        for student, teacher in pairs:
            _check_pair(name, student, teacher)
        losses = [self.pair_loss(student, teacher.detach()) for student, teacher in pairs]
        return self.loss_weight * torch.stack(losses).mean()

    def reduce(self, elementwise: torch.Tensor) -> torch.Tensor:
        """The elementwise loss of one pair, reduced by ``reduction``."""
        return elementwise.mean() if self.reduction == 'mean' else elementwise.sum()

    def pair_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """The unweighted loss of one checked pair (``teacher`` already detached); each loss defines it."""
        raise NotImplementedError


@register(LOSS_REGISTRY)
class PKDLoss(_FeatureKDLoss):
    r"""PKD: the MSE between per-sample, per-channel standardised feature maps (one minus their Pearson correlation).

    .. math::

        \hat F_{n,c} = \frac{F_{n,c} - \mu_{n,c}}{\sqrt{\sigma^2_{n,c} + \epsilon}}, \qquad
        L = \frac{w}{2} \operatorname{mean}\big((\hat F^s - \hat F^t)^2\big)

    :math:`\mu_{n,c}` and :math:`\sigma^2_{n,c}` are the mean and the (biased) variance of channel ``c`` of sample
    ``n`` over its ``H x W`` positions, :math:`\epsilon = 10^{-6}`, :math:`w` = ``loss_weight``. Since
    :math:`\hat F` has zero mean and unit variance, :math:`L \approx w (1 - \bar\rho)` with :math:`\bar\rho` the
    mean Pearson correlation of the student's and the teacher's maps: the loss ignores each map's offset and positive
    scale. A constant map standardises to 0.

    Args:
        loss_weight: :math:`w`.
        reduction: ``mean`` (the formula) or ``sum`` (the sum over the elements instead of their mean).
    """

    eps = 1e-6

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps)

    def pair_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self.reduce((self.standardise(student) - self.standardise(teacher)).square()) / 2


@register(LOSS_REGISTRY)
class RelationalKDLoss(_FeatureKDLoss):
    r"""Relational KD: the SmoothL1 distance between cosine-similarity matrices of feature tokens.

    Each map is average-pooled (adaptively) to a ``grid x grid`` grid, giving :math:`G = \text{grid}^2` tokens of
    dimension ``C`` per sample, and every token is L2-normalised: :math:`T \in \mathbb{R}^{N \times G \times C}`
    (a zero token stays 0). With student tokens :math:`T^s` and teacher tokens :math:`T^t`, per sample:

    .. math::

        L = w \operatorname{mean}\big(\operatorname{SmoothL1}_\beta(R^s, R^t)\big), \qquad
        R^t = T^t {T^t}^\top, \qquad
        R^s = \begin{cases} T^s {T^s}^\top & \texttt{anchors: self} \\
                            T^s {T^t}^\top & \texttt{anchors: teacher} \end{cases}

    with :math:`\operatorname{SmoothL1}_\beta(d) = d^2 / (2\beta)` for :math:`|d| < \beta`, :math:`|d| - \beta/2`
    otherwise, and :math:`w` = ``loss_weight``. The anchors are what each student token is compared with:

    - ``self`` (default): the student's own tokens. :math:`R^s_{ij}` is the cosine between student tokens ``i`` and
      ``j``, matched to the same cosine between teacher tokens; only the relations between positions are
      distilled, so any rotation of the student's channel space (a channel permutation, a sign flip) costs nothing.
    - ``teacher``: the teacher's tokens, fixed (detached) anchors in the teacher's feature space, as TPSD's text
      prompts are. :math:`R^s_{ij}` is the cosine between student token ``i`` and teacher token ``j``, matched to
      the teacher's own cosine :math:`R^t_{ij}`; the student's tokens must sit where the teacher's do.

    The loss ignores a positive scale of a sample's features. Cosines lie in :math:`[-1, 1]`, so their differences
    lie in :math:`[-2, 2]`: with :math:`\beta = 1` nearly every difference would fall in the quadratic zone, making the
    loss a halved MSE whose gradient (the difference itself) fades as the relations approach the teacher's. The
    default :math:`\beta = 0.1` gives every difference beyond 0.1 an L1 gradient of magnitude 1 and keeps the smooth
    quadratic zone near 0 only. A map smaller than the grid is repeated up to it by the pooling.

    Args:
        loss_weight: :math:`w`.
        reduction: ``mean`` (the formula) or ``sum`` (the sum over the elements instead of their mean).
        grid: tokens per side (``grid x grid`` tokens per sample).
        beta: :math:`\beta` of SmoothL1, >= 0 (0 is L1).
        anchors: ``self`` or ``teacher`` (see above).
    """

    eps = 1e-12

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', grid: int = 8, beta: float = 0.1,
                 anchors: str = 'self'):
        super().__init__(loss_weight, reduction)
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f'RelationalKDLoss: grid must be an integer >= 1, got {grid!r}.')
        if not beta >= 0:
            raise ValueError(f'RelationalKDLoss: beta must be >= 0, got {beta!r}.')
        if anchors not in ANCHORS:
            raise ValueError(f'RelationalKDLoss: anchors must be one of {ANCHORS}, got {anchors!r}.')
        self.grid = grid
        self.beta = beta
        self.anchors = anchors

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The ``N x G x C`` L2-normalised tokens of a feature map."""
        pooled = F.adaptive_avg_pool2d(x, self.grid).flatten(2).transpose(1, 2)
        return F.normalize(pooled, dim=2, eps=self.eps)

    def pair_loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t_s, t_t = self.tokens(student), self.tokens(teacher)
        r_t = t_t @ t_t.transpose(1, 2)
        r_s = t_s @ (t_s if self.anchors == 'self' else t_t).transpose(1, 2)
        return self.reduce(F.smooth_l1_loss(r_s, r_t, reduction='none', beta=self.beta))
