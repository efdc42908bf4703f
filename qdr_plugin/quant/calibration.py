"""Calibration: initial activation step sizes from a few batches.

Each activation quantizer gets an :class:`RangeObserver` that keeps the running min/max and a random sample of at
most ``SAMPLES_PER_BATCH`` values per batch. The step is then set by one of:

- ``max``:        ``s = max|x| / q_max`` (symmetric) or ``s = (max - min) / (2^b - 1)``, ``z = round(-min / s)``;
- ``percentile``: the same with ``max|x|`` replaced by the ``p``-th percentile of ``|x|`` (asymmetric: the
  ``100-p`` / ``p`` percentiles of ``x``);
- ``mse``:        the clip ``c = r * max`` (``r`` on a grid in ``[0.05, 1]``) whose fake-quantization of the sample
  has the lowest mean squared error.

Ranges always include 0, so a zero activation is exact.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .fake_quant import STEP_MIN, ActQuantizer

SAMPLES_PER_BATCH = 1 << 16


class RangeObserver:
    """Running min/max and a bounded random sample of the values an activation quantizer sees."""

    def __init__(self) -> None:
        self.min = torch.tensor(0.0)
        self.max = torch.tensor(0.0)
        self.samples: list[torch.Tensor] = []

    def observe(self, x: torch.Tensor, quantizer: ActQuantizer | None = None) -> None:
        x = x.detach().float().flatten()
        self.min = torch.minimum(self.min, x.min().cpu())
        self.max = torch.maximum(self.max, x.max().cpu())
        if x.numel() > SAMPLES_PER_BATCH:
            x = x[torch.randint(x.numel(), (SAMPLES_PER_BATCH,), device=x.device)]
        self.samples.append(x.cpu())


def _fake_quant_error(x: torch.Tensor, step: torch.Tensor, zero: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Mean squared fake-quantization error of ``x`` for each candidate ``(step, zero)`` (1-D tensors)."""
    q = torch.clamp(torch.round(x[None, :] / step[:, None]) + zero[:, None], qmin, qmax)
    return (((q - zero[:, None]) * step[:, None] - x[None, :]) ** 2).mean(dim=1)


def range_from_observer(
    obs: RangeObserver, quantizer: ActQuantizer, method: str, percentile: float
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The initial ``(step, zero_point)`` of ``quantizer`` from what ``obs`` saw (see the module docstring)."""
    sample = torch.cat(obs.samples)
    levels = quantizer.qmax - quantizer.qmin
    if quantizer.symmetric:
        if method == 'percentile':
            hi = torch.quantile(sample.abs(), percentile / 100.0)
        else:
            hi = torch.maximum(obs.max.abs(), obs.min.abs())
        if method == 'mse':
            ratios = torch.linspace(0.05, 1.0, 96)
            steps = (hi * ratios).clamp_min(STEP_MIN) / quantizer.qmax
            err = _fake_quant_error(sample, steps, torch.zeros_like(steps), quantizer.qmin, quantizer.qmax)
            return steps[err.argmin()], None
        return (hi / quantizer.qmax).clamp_min(STEP_MIN), None
    if method == 'percentile':
        lo = torch.quantile(sample, 1.0 - percentile / 100.0).clamp_max(0.0)
        hi = torch.quantile(sample, percentile / 100.0).clamp_min(0.0)
    else:
        lo, hi = obs.min.clamp_max(0.0), obs.max.clamp_min(0.0)
    if method == 'mse':
        ratios = torch.linspace(0.05, 1.0, 96)
        steps = ((hi - lo) * ratios).clamp_min(STEP_MIN) / levels
        zeros = torch.round(-lo * ratios / steps).clamp(quantizer.qmin, quantizer.qmax)
        best = _fake_quant_error(sample, steps, zeros, quantizer.qmin, quantizer.qmax).argmin()
        return steps[best], zeros[best]
    step = ((hi - lo) / levels).clamp_min(STEP_MIN)
    return step, torch.round(-lo / step).clamp(quantizer.qmin, quantizer.qmax)


@torch.no_grad()
def calibrate(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    method: str = 'percentile',
    percentile: float = 99.99,
) -> int:
    """Run ``model`` on ``batches`` (network inputs) and initialise every activation quantizer's step size.

    Weight quantizers initialise themselves from their weights on first use. Returns the number of activation
    quantizers initialised. Quantizers that saw no data (a branch the batches never reach) raise ``RuntimeError``.
    """
    quantizers = {name: m for name, m in model.named_modules() if isinstance(m, ActQuantizer) and m.enabled}
    if not quantizers:
        return 0
    was_training = model.training
    model.eval()
    for q in quantizers.values():
        q.observer = RangeObserver()
    try:
        n_batches = 0
        for batch in batches:
            model(batch)
            n_batches += 1
    finally:
        observers = {name: q.observer for name, q in quantizers.items()}
        for q in quantizers.values():
            q.observer = None
        model.train(was_training)
    if n_batches == 0:
        raise RuntimeError('calibrate() got no batches: give it at least one network input.')
    for name, q in quantizers.items():
        obs = observers[name]
        if not obs.samples:
            raise RuntimeError(f"Activation quantizer '{name}' saw no data during calibration: is it reachable?")
        q.set_range(*range_from_observer(obs, q, method, percentile))
    return len(quantizers)
