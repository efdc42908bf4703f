r"""QATIE's reconstruction loss (our reading of arXiv 2604.21743): a PSNR term on the luma, a cosine term on the
colour direction and an outlier-aware L1.

For a prediction :math:`\hat y` and a target :math:`y` (``N x C x H x W``, values in [0, 1]), per image :math:`n`:

.. math::

    L_n = w \Big[\, \frac{2\,(50 - \mathrm{PSNR}_Y)}{100} + (1 - \cos(\hat y_n, y_n)) + L_{oa} \Big]

.. math::

    \mathrm{PSNR}_Y = 10 \log_{10} \frac{1}{\max(\mathrm{MSE}(Y(\hat y_n), Y(y_n)),\ \epsilon)}, \qquad
    \cos(\hat y_n, y_n) = \frac{\langle \hat y_n, y_n \rangle}{\max(\lVert \hat y_n \rVert \lVert y_n \rVert,
    10^{-8})}

.. math::

    L_{oa} = \operatorname{mean}_{c,h,w}\big(\omega \, d\big), \qquad d = |\hat y_n - y_n|, \qquad
    \omega = \operatorname{sg}\big(1 + \tanh(d / \tau)\big) \in [1, 2)

with :math:`w` = ``loss_weight``, :math:`\epsilon` = ``mse_floor`` (1e-10: PSNR at most 100 dB, so the loss is
finite for identical images, where it takes its least value :math:`2 (50 - 100) / 100 = -1` times :math:`w`),
:math:`\tau` = ``tau`` and :math:`\operatorname{sg}` the stop-gradient (the weights are detached). The cosine is
taken between the flattened images (all channels and pixels).

:math:`Y` is the BT.601 luma as basicsr computes it for ``test_y_channel`` (``rgb2ycbcr_pt``, input in RGB
order): :math:`Y = (65.481 R + 128.553 G + 24.966 B) / 255` (the offset 16/255 cancels in the difference), so
:math:`\mathrm{PSNR}_Y` is the PSNR-Y basicsr's validation reports. A one-channel image is its own luma; other
channel counts are refused.

The PSNR term is a constant offset plus :math:`-\tfrac{20}{\ln 10} \cdot \tfrac{1}{100} \ln \mathrm{MSE}`: its
gradient scales the squared error by :math:`1/\mathrm{MSE}`, so it keeps pulling when the error is already small.
The cosine term penalises colour shifts (a change of the pixel vector's direction) that a small L1 leaves. The
outlier weights give a pixel with a large error up to twice the weight of an accurate one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from qdr_plugin.registry import register

REDUCTIONS = ('none', 'mean', 'sum')
Y_WEIGHTS = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)
"""BT.601 luma coefficients for RGB in [0, 1], as basicsr's ``rgb2ycbcr_pt(y_only=True)`` (without its offset)."""


def luma(img: torch.Tensor) -> torch.Tensor:
    """The BT.601 luma ``N x 1 x H x W`` of an RGB batch in [0, 1] (without basicsr's constant offset 16/255); a
    one-channel batch is returned as it is."""
    if img.shape[1] == 1:
        return img
    if img.shape[1] != 3:
        raise ValueError(f'QATIELoss: needs 1- or 3-channel images for the luma PSNR, got {img.shape[1]} channels.')
    weight = img.new_tensor(Y_WEIGHTS).view(1, 3, 1, 1)
    return (img * weight).sum(dim=1, keepdim=True)


def _weighted_mean(x: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Per-image mean of ``x`` over all but the batch dimension, weighted by ``weight`` (broadcast to ``x``)."""
    if weight is None:
        return x.flatten(1).mean(dim=1)
    weight = weight.expand_as(x)
    return (x * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp_min(1e-12)


@register(LOSS_REGISTRY)
class QATIELoss(nn.Module):
    """QATIE's loss ``2 (50 - PSNR_Y) / 100 + (1 - cos) + L_oa`` (see the module docstring for the formula).

    Args:
        loss_weight: the weight :math:`w` of the whole loss.
        reduction: ``mean`` (over the batch's images), ``sum`` or ``none`` (one loss per image, shape ``N``).
        tau: the error scale of the outlier weights ``1 + tanh(|d| / tau)`` (> 0).
        mse_floor: the least MSE the PSNR term sees (> 0): PSNR is at most ``10 log10(1 / mse_floor)`` dB.
        psnr_weight, cos_weight, oa_weight: the weights of the three terms (QATIE: 1, 1, 1).
    """

    def __init__(
        self,
        loss_weight: float = 1.0,
        reduction: str = 'mean',
        tau: float = 0.1,
        mse_floor: float = 1e-10,
        psnr_weight: float = 1.0,
        cos_weight: float = 1.0,
        oa_weight: float = 1.0,
    ):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f'QATIELoss: unsupported reduction {reduction!r}; use one of {REDUCTIONS}.')
        for name, value in (('tau', tau), ('mse_floor', mse_floor)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f'QATIELoss: {name} must be a number > 0, got {value!r}.')
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.tau = float(tau)
        self.mse_floor = float(mse_floor)
        self.psnr_weight, self.cos_weight, self.oa_weight = psnr_weight, cos_weight, oa_weight

    def psnr_y(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image PSNR (dB) of the luma, with the MSE floored at ``mse_floor``; shape ``N``."""
        y_weight = None if weight is None else weight.mean(dim=1, keepdim=True)
        mse = _weighted_mean((luma(pred) - luma(target)).square(), y_weight)
        return -10.0 * torch.log10(mse.clamp_min(self.mse_floor))

    @staticmethod
    def cosine(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image cosine similarity of the flattened images (weighted by ``sqrt(weight)``); shape ``N``."""
        if weight is not None:
            root = weight.expand_as(pred).sqrt()
            pred, target = pred * root, target * root
        return F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=1, eps=1e-8)

    def outlier_weights(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The detached per-element weights ``1 + tanh(|pred - target| / tau)`` of the outlier-aware L1."""
        return 1.0 + torch.tanh((pred - target).detach().abs() / self.tau)

    def outlier_l1(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Per-image outlier-aware L1 ``mean(w |pred - target|)``; shape ``N``."""
        return _weighted_mean(self.outlier_weights(pred, target) * (pred - target).abs(), weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor:
        """
        Args:
            pred: ``N x C x H x W`` prediction in [0, 1] (``C`` 1 or 3, RGB order).
            target: the ground truth, same shape.
            weight: optional element-wise weights, broadcastable to ``pred``: a weighted mean for the MSE (their
                channel mean for the luma) and the L1, ``sqrt(weight)``-scaled images for the cosine.
        """
        if pred.shape != target.shape:
            raise ValueError(f'QATIELoss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ.')
        if pred.dim() != 4:
            raise ValueError(f'QATIELoss: needs N x C x H x W images, got shape {tuple(pred.shape)}.')
        per_image = (
            self.psnr_weight * 2.0 * (50.0 - self.psnr_y(pred, target, weight)) / 100.0
            + self.cos_weight * (1.0 - self.cosine(pred, target, weight))
            + self.oa_weight * self.outlier_l1(pred, target, weight)
        )
        if self.reduction == 'mean':
            per_image = per_image.mean()
        elif self.reduction == 'sum':
            per_image = per_image.sum()
        return self.loss_weight * per_image
