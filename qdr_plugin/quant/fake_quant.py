r"""LSQ fake quantizers (Esser et al., "Learned Step Size Quantization", ICLR 2020).

For a tensor :math:`x`, step :math:`s > 0`, integer zero point :math:`z` and integer range :math:`[q_{min}, q_{max}]`:

.. math::

    v = x / s + z, \qquad q = \mathrm{clamp}(\lfloor v \rceil, q_{min}, q_{max}), \qquad \hat x = (q - z)\, s

Rounding uses the straight-through estimator. A value counts as inside the range when its rounded value is, i.e.
:math:`I = [q_{min} \le \lfloor v \rceil \le q_{max}]` (:math:`v \in [q_{min} - \tfrac12, q_{max} + \tfrac12)`, the
convention of PyTorch's fused kernels), and

.. math::

    \frac{\partial \hat x}{\partial x} = I, \qquad
    \frac{\partial \hat x}{\partial s} = g \cdot \begin{cases} q - v & I \\ q - z & \text{otherwise} \end{cases},
    \qquad
    \frac{\partial \hat x}{\partial z} = g \cdot \begin{cases} 0 & I \\ -s & \text{otherwise} \end{cases}

with LSQ's gradient scale :math:`g = 1 / \sqrt{N q_{max}}`, :math:`N` the number of elements sharing one step.
The zero point is stored as a float and rounded in the forward pass (straight-through).

Two implementations compute exactly this:

- symmetric per-tensor activations (the default, and most of the work in a QAT step) use :class:`_SymmetricLSQ`,
  which stores only ``x`` and ``x_hat`` and gets the step gradient from two dot products,
  :math:`\sum_i g_i \partial \hat x_i / \partial s = (\langle g, \hat x \rangle - \langle g \odot I, x \rangle) / s`;
  on a 2-core CPU this is about twice as fast as the ATen kernel below;
- per-channel weights and asymmetric activations use PyTorch's fused ATen kernels
  ``_fake_quantize_learnable_per_{tensor,channel}_affine`` (``grad_factor`` = :math:`g`). These are plain tensor ops,
  not the deprecated ``torch.ao.quantization`` framework.

``tests/test_quant_math.py`` checks both against the formulas above.
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import nn

from . import onnx_qdq

STEP_MIN = 1e-8
DEAD_CHANNEL_MAX = 1e-6  # a weight channel whose every |w| is below this holds nothing at 8 bits or fewer


def _symmetric_grid(x: torch.Tensor, s: float, qmin: int, qmax: int) -> torch.Tensor:
    """``clamp(round(x / s), qmin, qmax) * s`` (``x / s``, as QuantizeLinear computes it)."""
    return torch.div(x, s).round_().clamp_(qmin, qmax).mul_(s)


class _SymmetricLSQ(torch.autograd.Function):
    """LSQ fake quantization with zero point 0 and one step (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, step, qmin, qmax, grad_scale):
        s = float(step.clamp_min(STEP_MIN))
        ctx.save_for_backward(x)  # not y: a network may change the output in place (EDSR's ``res += x``)
        ctx.constants = (s, qmin, qmax, grad_scale)
        return _symmetric_grid(x, s, qmin, qmax)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s, qmin, qmax, grad_scale = ctx.constants
        # inside <=> round(x / s) in [qmin, qmax] <=> (qmin - 1/2) s < x < (qmax + 1/2) s (ties: measure zero)
        grad_x = torch.ops.aten.hardtanh_backward(grad, x, (qmin - 0.5) * s, (qmax + 0.5) * s)
        grad_step = None
        if ctx.needs_input_grad[1]:
            y = _symmetric_grid(x, s, qmin, qmax)
            flat = grad.reshape(-1)
            dot = torch.dot(flat, y.reshape(-1)) - torch.dot(grad_x.reshape(-1), x.reshape(-1))
            grad_step = (dot * (grad_scale / s)).reshape(1)
        return grad_x, grad_step, None, None, None


def lsq_fake_quant(
    x: torch.Tensor,
    step: torch.Tensor,
    zero_point: torch.Tensor | None,
    qmin: int,
    qmax: int,
    grad_scale: float = 1.0,
    axis: int | None = None,
) -> torch.Tensor:
    """Fake-quantize ``x`` (see the module docstring).

    ``step`` and ``zero_point`` are 1-D: one element (per tensor, ``axis=None``) or one per slice along ``axis``.
    ``zero_point=None`` means symmetric (zero point 0, not learnable).
    """
    if axis is None and zero_point is None:
        return _SymmetricLSQ.apply(x, step, qmin, qmax, grad_scale)
    step = step.clamp_min(STEP_MIN)
    if zero_point is None:
        zero_point = torch.zeros_like(step)
    if axis is None:
        return torch._fake_quantize_learnable_per_tensor_affine(x, step, zero_point, qmin, qmax, grad_scale)
    return torch._fake_quantize_learnable_per_channel_affine(x, step, zero_point, axis, qmin, qmax, grad_scale)


class FakeQuantizer(nn.Module):
    """Base of the weight and activation quantizers: the learnable step (and zero point) and the integer range.

    State (in the state dict): ``step``, ``zero_point`` (asymmetric only; a float rounded in the forward pass) and
    ``initialized``. ``enabled = False`` makes the quantizer the identity (FP32 warm-up).
    """

    axis: int | None = None
    onnx_dtype: str | None = None  # set by the ONNX exporter: 'int8' or 'uint8' (activations)
    onnx_weight: tuple[torch.Tensor, torch.Tensor] | None = None  # set by the exporter: (int8 weight, scales)

    def __init__(self, bits: int, signed: bool, narrow: bool, channels: int, learn: bool, asymmetric: bool):
        super().__init__()
        self.bits = bits
        if signed:
            self.qmax = 2 ** (bits - 1) - 1
            self.qmin = -self.qmax if narrow else -(2 ** (bits - 1))
        else:
            self.qmin, self.qmax = 0, 2**bits - 1
        self.step = nn.Parameter(torch.ones(channels), requires_grad=learn)
        if asymmetric:
            self.zero_point = nn.Parameter(torch.zeros(channels), requires_grad=learn)
        else:
            self.register_buffer('zero_point', torch.zeros(channels), persistent=False)
        self.register_buffer('initialized', torch.zeros((), dtype=torch.bool))
        self.enabled = True

    @property
    def symmetric(self) -> bool:
        return not isinstance(self.zero_point, nn.Parameter)

    def set_range(self, step: torch.Tensor, zero_point: torch.Tensor | None = None) -> None:
        """Initialise the step (and zero point) from calibration and mark the quantizer initialized."""
        with torch.no_grad():
            self.step.copy_(step.reshape(self.step.shape).clamp_min(STEP_MIN))
            if zero_point is not None:
                self.zero_point.copy_(zero_point.reshape(self.zero_point.shape))
            self.initialized.fill_(True)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` with the current step and zero point (LSQ gradient scale included).

        Inside ``torch.onnx.export`` this emits QuantizeLinear / DequantizeLinear instead (see ``onnx_qdq``).
        """
        if torch.onnx.is_in_onnx_export():
            return self._export(x)
        grad_scale = 1.0 / math.sqrt(x.numel() / self.step.numel() * self.qmax)
        zero_point = None if self.symmetric else self.zero_point
        return lsq_fake_quant(x, self.step, zero_point, self.qmin, self.qmax, grad_scale, self.axis)

    def _export(self, x: torch.Tensor) -> torch.Tensor:
        step = self.step.detach().clamp_min(STEP_MIN)
        if self.axis is not None:
            if self.onnx_weight is None:
                raise RuntimeError('export the network with qdr_plugin.deploy.export_onnx (it prepares the weights).')
            return onnx_qdq.export_weight(*self.onnx_weight, self.axis)
        zero = 0 if self.symmetric else int(torch.round(self.zero_point.detach()).item())
        if self.onnx_dtype == 'uint8' and self.qmin < 0:  # signed grid shifted into uint8: same numbers
            return onnx_qdq.export_activation(x, float(step), zero + 128, self.qmin + 128, self.qmax + 128, 'uint8')
        if self.onnx_dtype == 'int8' and self.qmin >= 0:  # an unsigned grid has no exact int8 form
            raise ValueError(f'an unsigned [{self.qmin}, {self.qmax}] quantizer cannot be exported as int8; '
                             'train with quant.act_symmetric: true and quant.unsigned_relu: false for TensorRT.')
        dtype = self.onnx_dtype or ('int8' if self.qmin < 0 else 'uint8')
        return onnx_qdq.export_activation(x, float(step), zero, self.qmin, self.qmax, dtype)

    def extra_repr(self) -> str:
        kind = 'symmetric' if self.symmetric else 'asymmetric'
        return f'bits={self.bits}, {kind}, range=[{self.qmin}, {self.qmax}], channels={self.step.numel()}'


OBSERVER_MOMENTUM = 0.01
"""``quant.scheme: observer``: weight of the newest batch in an activation quantizer's moving-average min / max."""


class WeightQuantizer(FakeQuantizer):
    """Per-output-channel, symmetric, narrow-range weight quantizer; ``axis`` is the output-channel axis.

    ``observe`` (``quant.scheme: observer``): one step for the whole tensor, ``s = max|W| / q_max``, recomputed from
    the current weights at every training forward pass (a min / max observer, not learned); it is stored once per
    channel, so the export is the same per-axis ``DequantizeLinear`` with equal scales.
    """

    def __init__(self, bits: int, channels: int, axis: int = 0, learn: bool = True, observe: bool = False):
        super().__init__(bits, signed=True, narrow=True, channels=channels, learn=learn and not observe,
                         asymmetric=False)
        self.axis = axis
        self.observe = observe

    def init_from_weight(self, weight: torch.Tensor, method: str = 'max') -> None:
        """``max``: ``s_c = max|w_c| / q_max``; ``mse``: per channel, the clip in ``max|w_c| * [0.3, 1]`` with the
        lowest quantization MSE.

        A dead channel (every ``|w| < 1e-6``, e.g. a published network's pruned or subnormal filters) gets the
        median step of the live channels (``1 / q_max`` if none is live): its weights round to 0 either way, and a
        step that small has no INT8 form (its int32 bias ``b / (s_x s_w)`` would overflow).
        """
        if self.observe:
            self.set_range(weight.detach().abs().amax().clamp_min(DEAD_CHANNEL_MAX).expand_as(self.step) / self.qmax)
            return
        w = weight.detach().transpose(0, self.axis).reshape(weight.shape[self.axis], -1)
        wmax = w.abs().amax(dim=1)
        dead = wmax < DEAD_CHANNEL_MAX
        live = wmax[~dead]
        wmax = torch.where(dead, live.median() if live.numel() else torch.ones_like(wmax), wmax)
        if method == 'max':
            self.set_range(wmax / self.qmax)
            return
        ratios = torch.linspace(0.3, 1.0, 71, dtype=w.dtype, device=w.device)
        steps = wmax[None, :] * ratios[:, None] / self.qmax  # (ratios, channels)
        err = torch.stack(
            [((torch.round(w / s[:, None]).clamp(self.qmin, self.qmax) * s[:, None] - w) ** 2).sum(1) for s in steps]
        )
        self.set_range(steps.gather(0, err.argmin(0, keepdim=True))[0])

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        if not bool(self.initialized) or (self.observe and self.training):
            self.init_from_weight(weight)
        return self.quantize(weight)


class ActQuantizer(FakeQuantizer):
    """Per-tensor activation quantizer, symmetric signed (default) or asymmetric unsigned with a zero point.

    One tensor is quantized once: when the same quantizer (shared between consumers by
    :func:`qdr_plugin.quant.tie_shared_quantizers`) is called again with the very same, unmodified tensor, or with
    its own previous output (a convolution's output quantizer tied to its consumers'), it returns its previous
    output (weak references, so nothing outlives the step). That is what a deployed INT8 graph
    does too: one QuantizeLinear per tensor, its DequantizeLinear feeding every consumer.

    While ``observer`` is set (calibration, tying) it reports ``x`` to the observer and passes it through unchanged
    (or returns what the observer's ``observe`` returns instead, when that is not ``None``).

    ``observe`` (``quant.scheme: observer``): the range is a moving average of the batches' min and max, updated at
    every training forward pass before quantizing (``m <- (1 - c) m + c min(x)``, the same for the max, ``c`` =
    :data:`OBSERVER_MOMENTUM`; starting from the calibrated range), and the step and zero point follow from it:
    ``s = (M - m) / (q_max - q_min)``, ``z = round(q_min - m / s)``; nothing is learned.
    """

    def __init__(self, bits: int, symmetric: bool = True, learn: bool = True, observe: bool = False):
        super().__init__(bits, signed=symmetric, narrow=False, channels=1, learn=learn and not observe,
                         asymmetric=not symmetric)
        self.observer = None
        self._last: tuple[weakref.ref, int, weakref.ref, int] | None = None
        self.observe = observe
        if observe:
            self.register_buffer('running_range', torch.full((2,), float('nan')))

    @torch.no_grad()
    def _update_range(self, x: torch.Tensor) -> None:
        """One moving-average step of the observed range, then the step and zero point it gives."""
        step, zero = float(self.step), float(self.zero_point) if not self.symmetric else 0.0
        if torch.isnan(self.running_range).any():  # start from the calibrated range
            self.running_range.copy_(torch.tensor([(self.qmin - zero) * step, (self.qmax - zero) * step]))
        batch = torch.stack([x.detach().min().clamp_max(0), x.detach().max().clamp_min(0)]).to(self.running_range)
        self.running_range.lerp_(batch, OBSERVER_MOMENTUM)
        low, high = self.running_range.tolist()
        new_step = max((high - low) / (self.qmax - self.qmin), STEP_MIN)
        zero_point = None if self.symmetric else torch.tensor(round(self.qmin - low / new_step)).clamp(self.qmin,
                                                                                                       self.qmax)
        self.set_range(torch.tensor(new_step), zero_point)

    def use_unsigned_grid(self) -> None:
        """Quantize to ``[0, 2^b - 1]`` with zero point 0 (for inputs that are never negative, e.g. ReLU outputs)."""
        if not self.symmetric:
            raise ValueError('use_unsigned_grid: an asymmetric quantizer already has an unsigned grid.')
        self.qmin, self.qmax = 0, 2**self.bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            seen = self.observer.observe(x, self)
            return x if seen is None else seen
        if not self.enabled:
            return x
        if self._last is not None:
            last_x, version, last_y, y_version = self._last
            y = last_y()
            if y is not None and ((x is y and y._version == y_version) or (last_x() is x and x._version == version)):
                return y  # the same tensor again, or this quantizer's own output (already on its grid)
        if not bool(self.initialized):
            raise RuntimeError(
                'An activation quantizer was used before calibration. Run qdr_plugin.quant.calibrate(model, batches) '
                'after quantize_model, or load a checkpoint of a quantized network.'
            )
        if self.observe and self.training:
            self._update_range(x)
        y = self.quantize(x)
        self._last = (weakref.ref(x), x._version, weakref.ref(y), y._version)
        return y
