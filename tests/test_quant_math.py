"""Tests of the LSQ fake-quantization math (qdr_plugin.quant.fake_quant), calibration and QuantConfig.

Every expected value is computed by hand in float64 from the formulas of the fake_quant module docstring:

    v = x / s + z,   q = clamp(round(v), qmin, qmax),   y = (q - z) * s,   I = [qmin <= round(v) <= qmax]
    dy/dx = I,   dy/ds = g * (q - v if I else q - z),   dy/dz = g * (0 if I else -s)

Rounding makes ``torch.autograd.gradcheck`` meaningless here, so the gradients are checked against these formulas.
Test inputs keep away from rounding ties; the half-step bands at the ends of the range are tested on their own.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from qdr_plugin.quant import (
    ActQuantizer,
    QuantConfig,
    QuantConv2d,
    QuantConvTranspose2d,
    WeightQuantizer,
    calibrate,
    lsq_fake_quant,
)
from qdr_plugin.quant.fake_quant import _SymmetricLSQ

F64 = torch.float64


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _sample(shape, step, zero, qmin, qmax, spread, seed):
    """Random float32 ``x`` (``spread`` times a standard normal) with ``v = x/s + z`` at least 0.01 away from a
    rounding tie and outside the half-step bands ``[qmax - 0.01, qmax + 0.6]`` / ``[qmin - 0.6, qmin + 0.01]``
    (those values are moved one step further out). ``step`` and ``zero`` broadcast against ``shape``."""
    gen = torch.Generator().manual_seed(seed)
    step, zero = torch.as_tensor(step, dtype=F64), torch.as_tensor(zero, dtype=F64)
    v = torch.randn(shape, generator=gen, dtype=F64) * spread / step + zero
    frac = v - v.floor()
    v = torch.where((frac - 0.5).abs() < 0.01, v + 0.1, v)
    v = torch.where((v > qmax - 0.01) & (v < qmax + 0.6), v + 1.0, v)
    v = torch.where((v < qmin + 0.01) & (v > qmin - 0.6), v - 1.0, v)
    return ((v - zero) * step).float()


def _reference(x, step, zero, qmin, qmax, grad, grad_scale):
    """Float64 forward and per-element gradients of the docstring formulas (step / zero broadcast against x)."""
    x, s, z = x.to(F64), torch.as_tensor(step, dtype=F64), torch.as_tensor(zero, dtype=F64)
    grad = grad.to(F64)
    v = x / s + z
    q = torch.clamp(torch.round(v), qmin, qmax)
    y = (q - z) * s
    inside = (v >= qmin) & (v <= qmax)
    grad_x = grad * inside
    grad_s = grad * torch.where(inside, q - v, q - z) * grad_scale
    grad_z = grad * torch.where(inside, torch.zeros_like(v), -s.expand_as(v)) * grad_scale
    # magnitude of the summed terms, for float32 tolerances of the step gradient
    size_s = (grad.abs() * (v.abs() + q.abs() + z.abs())).mul(grad_scale)
    return y, inside, grad_x, grad_s, grad_z, size_s


def _per_channel(t, axis):
    """Sum of ``t`` over every dimension but ``axis``."""
    return t.transpose(0, axis).reshape(t.shape[axis], -1).sum(1)


def _bshape(channels, ndim, axis):
    shape = [1] * ndim
    shape[axis] = channels
    return shape


def _set(q, step, zero=None):
    q.set_range(torch.as_tensor(step, dtype=torch.float32), None if zero is None else torch.as_tensor(zero).float())
    return q


# ----------------------------------------------------------------------------------------------------------------
# forward


@pytest.mark.parametrize('bits', [2, 4, 8])
def test_symmetric_forward_matches_reference(bits):
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    s = 0.0371
    x = _sample((3, 5, 7), s, 0, qmin, qmax, spread=s * qmax * 0.8, seed=bits)
    step = torch.tensor([s])
    y = lsq_fake_quant(x, step, None, qmin, qmax, 1.0)
    s64 = float(step)
    ref, inside = _reference(x, s64, 0, qmin, qmax, torch.ones_like(x), 1.0)[:2]
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert 0 < inside.sum() < x.numel(), 'the sample must have values in and out of the range'
    torch.testing.assert_close(y.to(F64), ref, rtol=1e-6, atol=1e-9)
    k = y.to(F64) / s64
    assert torch.allclose(k, k.round(), atol=1e-4, rtol=0), 'y / s must be an integer'
    assert k.round().min() >= qmin and k.round().max() <= qmax
    assert y.min() >= qmin * s64 * (1 + 1e-6) and y.max() <= qmax * s64 * (1 + 1e-6)
    err = (y.to(F64) - x.to(F64)).abs()[inside]
    assert err.max() <= s64 / 2 * (1 + 1e-5)
    # clipped values land exactly on the ends of the range
    v = x.to(F64) / s64
    assert torch.all(k.round()[v > qmax] == qmax) and torch.all(k.round()[v < qmin] == qmin)


def test_symmetric_path_is_used_only_for_per_tensor_symmetric(monkeypatch):
    calls = []
    original = _SymmetricLSQ.apply

    def spy(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(_SymmetricLSQ, 'apply', spy)
    x = torch.randn(4, 3)
    lsq_fake_quant(x, torch.tensor([0.1]), None, -128, 127)
    assert len(calls) == 1
    lsq_fake_quant(x, torch.tensor([0.1]), torch.zeros(1), -128, 127)
    lsq_fake_quant(x, torch.full((4,), 0.1), None, -127, 127, axis=0)
    assert len(calls) == 1


@pytest.mark.parametrize('axis', [0, 1])
def test_per_channel_forward_matches_reference(axis):
    torch.manual_seed(0)
    qmin, qmax = -127, 127
    shape = (6, 5, 3, 3)
    channels = shape[axis]
    steps = torch.rand(channels) * 0.05 + 0.01
    bs = _bshape(channels, 4, axis)
    x = _sample(shape, steps.reshape(bs), 0, qmin, qmax, spread=1.0, seed=10 + axis)
    y = lsq_fake_quant(x, steps, None, qmin, qmax, 1.0, axis=axis)
    s64 = steps.to(F64).reshape(bs)
    ref, inside = _reference(x, s64, 0, qmin, qmax, torch.ones_like(x), 1.0)[:2]
    assert 0 < inside.sum() < x.numel()
    torch.testing.assert_close(y.to(F64), ref, rtol=1e-6, atol=1e-9)
    k = y.to(F64) / s64
    assert torch.allclose(k, k.round(), atol=1e-4, rtol=0)
    assert k.round().abs().max() <= qmax
    assert ((y.to(F64) - x.to(F64)).abs() - s64 / 2)[inside].max() <= 1e-6


@pytest.mark.parametrize('zero', [0.0, 37.0, 200.0, 12.3, 99.7])
def test_asymmetric_forward_matches_reference(zero):
    qmin, qmax = 0, 255
    s = 0.021
    z_eff = round(zero)  # the zero point is a float rounded in the forward pass
    x = _sample((4, 9, 5), s, z_eff, qmin, qmax, spread=2.5, seed=int(zero * 10))
    y = lsq_fake_quant(x, torch.tensor([s]), torch.tensor([zero]), qmin, qmax, 1.0)
    s64 = float(torch.tensor([s]))
    ref, inside = _reference(x, s64, z_eff, qmin, qmax, torch.ones_like(x), 1.0)[:2]
    assert 0 < inside.sum() < x.numel()
    torch.testing.assert_close(y.to(F64), ref, rtol=1e-6, atol=1e-9)
    k = y.to(F64) / s64 + z_eff
    assert torch.allclose(k, k.round(), atol=1e-4, rtol=0)
    assert k.round().min() >= qmin and k.round().max() <= qmax
    assert ((y.to(F64) - x.to(F64)).abs() - s64 / 2)[inside].max() <= 1e-6
    assert lsq_fake_quant(torch.zeros(3), torch.tensor([s]), torch.tensor([zero]), qmin, qmax).eq(0).all()


def test_step_is_clamped_to_a_positive_minimum():
    x = torch.tensor([1e-9, -3e-8, 0.0])
    for zero in (None, torch.zeros(1)):
        y = lsq_fake_quant(x, torch.tensor([0.0]), zero, -128, 127)
        assert torch.isfinite(y).all()


# ----------------------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize('bits', [3, 8])
def test_symmetric_gradients_match_lsq(bits):
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    s, g = 2.0 / qmax, 0.37
    x = _sample((4, 6, 5), s, 0, qmin, qmax, spread=1.5, seed=bits).requires_grad_()
    step = torch.tensor([s], requires_grad=True)
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(99))
    lsq_fake_quant(x, step, None, qmin, qmax, g).backward(upstream)
    _, inside, grad_x, grad_s, _, size_s = _reference(x.detach(), float(step), 0, qmin, qmax, upstream, g)
    assert 0 < inside.sum() < x.numel()
    assert torch.equal(x.grad, upstream * inside), 'dy/dx must be 1 inside the range and 0 outside'
    assert step.grad.shape == step.shape
    torch.testing.assert_close(step.grad.to(F64), grad_s.sum().reshape(1), rtol=0, atol=float(2e-6 * size_s.sum()))
    # the check above is not vacuous: the in-range and clipped parts are both sizable
    assert grad_s[inside].abs().sum() > 1e-2 * g and grad_s[~inside].abs().sum() > 1e-2 * g


@pytest.mark.parametrize('axis', [0, 1])
def test_per_channel_gradients_match_lsq(axis):
    torch.manual_seed(1)
    qmin, qmax = -7, 7
    shape = (5, 4, 3, 3)
    channels = shape[axis]
    bs = _bshape(channels, 4, axis)
    steps = (torch.rand(channels) * 0.1 + 0.1).requires_grad_()
    x = _sample(shape, steps.detach().reshape(bs), 0, qmin, qmax, spread=0.7, seed=20 + axis).requires_grad_()
    upstream = torch.randn(shape)
    g = 0.21
    lsq_fake_quant(x, steps, None, qmin, qmax, g, axis=axis).backward(upstream)
    _, inside, grad_x, grad_s, _, size_s = _reference(
        x.detach(), steps.detach().to(F64).reshape(bs), 0, qmin, qmax, upstream, g
    )
    assert 0 < inside.sum() < x.numel()
    assert torch.equal(x.grad, upstream * inside)
    assert steps.grad.shape == (channels,)
    torch.testing.assert_close(steps.grad.to(F64), _per_channel(grad_s, axis), rtol=0, atol=float(2e-6 * size_s.sum()))
    # every channel has its own, different, gradient
    assert len(set(steps.grad.tolist())) == channels


def test_asymmetric_gradients_match_lsq():
    torch.manual_seed(2)
    qmin, qmax = 0, 15
    s, zero, g = 0.13, 5.0, 0.43
    x = _sample((3, 8, 6), s, zero, qmin, qmax, spread=1.2, seed=3).requires_grad_()
    step = torch.tensor([s], requires_grad=True)
    zp = torch.tensor([zero], requires_grad=True)
    upstream = torch.randn(x.shape)
    lsq_fake_quant(x, step, zp, qmin, qmax, g).backward(upstream)
    _, inside, grad_x, grad_s, grad_z, size_s = _reference(x.detach(), float(step), zero, qmin, qmax, upstream, g)
    assert 0 < (~inside & (x.detach() > 0)).sum() and 0 < (~inside & (x.detach() < 0)).sum(), 'clip both ends'
    assert torch.equal(x.grad, upstream * inside)
    torch.testing.assert_close(step.grad.to(F64), grad_s.sum().reshape(1), rtol=0, atol=float(2e-6 * size_s.sum()))
    expected_z = -float(step) * g * upstream.to(F64)[~inside].sum()
    torch.testing.assert_close(zp.grad.to(F64), grad_z.sum().reshape(1), rtol=1e-5, atol=1e-6)
    assert math.isclose(float(zp.grad), float(expected_z), rel_tol=1e-5)
    assert abs(float(zp.grad)) > 1e-3


@pytest.mark.parametrize('kind', ['sym_act', 'asym_act', 'weight'])
def test_quantizers_use_lsq_gradient_scale(kind):
    """FakeQuantizer.quantize uses g = 1 / sqrt(N * qmax), N the number of elements that share one step."""
    torch.manual_seed(3)
    shape = (4, 3, 5, 5)
    if kind == 'weight':
        q = WeightQuantizer(8, channels=4)
        steps = torch.rand(4) * 0.004 + 0.004
        _set(q, steps)
        s_b, zero = steps.to(F64).reshape(4, 1, 1, 1), 0.0
        n = 3 * 5 * 5
    elif kind == 'sym_act':
        q = _set(ActQuantizer(8), [0.012])
        s_b, zero, n = float(q.step), 0.0, math.prod(shape)
    else:
        q = _set(ActQuantizer(8, symmetric=False), [0.012], [100.0])
        s_b, zero, n = float(q.step), 100.0, math.prod(shape)
    x = _sample(shape, s_b, zero, q.qmin, q.qmax, spread=1.0, seed=4).requires_grad_()
    upstream = torch.randn(shape)
    q(x).backward(upstream)
    g = 1.0 / math.sqrt(n * q.qmax)
    _, inside, grad_x, grad_s, grad_z, size_s = _reference(x.detach(), s_b, zero, q.qmin, q.qmax, upstream, g)
    assert 0 < inside.sum() < x.numel()
    expected = _per_channel(grad_s, 0) if kind == 'weight' else grad_s.sum().reshape(1)
    torch.testing.assert_close(q.step.grad.to(F64), expected, rtol=0, atol=float(2e-6 * size_s.sum()))
    if kind == 'asym_act':
        torch.testing.assert_close(q.zero_point.grad.to(F64), grad_z.sum().reshape(1), rtol=1e-5, atol=1e-8)


def _edge_gradients(path):
    """Gradients at the top edge of the range for ``v = x/s`` in (qmax, qmax + 0.2, qmax + 0.4, qmax + 0.6),
    one element at a time, through the symmetric path or the ATen per-tensor path (zero point 0)."""
    s, qmin, qmax = 0.5, -128, 127
    out = []
    for v in (127.0, 127.2, 127.4, 127.6):
        x = torch.tensor([v * s], requires_grad=True)
        step = torch.tensor([s], requires_grad=True)
        zero = None if path == 'symmetric' else torch.zeros(1)
        lsq_fake_quant(x, step, zero, qmin, qmax, 1.0).backward(torch.ones(1))
        out.append((float(x.grad), float(step.grad)))
    return out


@pytest.mark.parametrize('path', ['symmetric', 'aten'])
def test_gradients_at_the_range_end_follow_the_rounded_value(path):
    """Inside means round(v) in range: v = 127, 127.2, 127.4 are inside (dy/dx 1, dy/ds q - v), 127.6 is not."""
    grads = _edge_gradients(path)
    for (grad_x, grad_s), v in zip(grads[:3], (127.0, 127.2, 127.4), strict=True):
        assert grad_x == 1.0 and grad_s == pytest.approx(127 - v, abs=1e-4)
    assert grads[3] == (0.0, 127.0)


# ----------------------------------------------------------------------------------------------------------------
# property tests of the quantizer modules

_shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
_common = dict(
    bits=st.integers(2, 8),
    step=st.floats(1e-3, 10.0),
    shape=_shapes,
    seed=st.integers(0, 2**31 - 1),
    spread=st.floats(0.1, 2.0),
)


def _check_grid(x, y, s, z, qmin, qmax):
    """y on the grid (y/s + z integral within 1e-4), inside [(qmin-z)s, (qmax-z)s], |y - x| <= s/2 in range."""
    x, y = x.to(F64), y.detach().to(F64)
    s = torch.as_tensor(s, dtype=F64)
    k = y / s + z
    assert torch.allclose(k, k.round(), atol=1e-4, rtol=0)
    assert k.round().min() >= qmin and k.round().max() <= qmax
    lo, hi = (qmin - z) * s, (qmax - z) * s
    assert torch.all(y >= lo - 1e-6 * (lo.abs() + s)) and torch.all(y <= hi + 1e-6 * (hi.abs() + s))
    inside = (x >= lo) & (x <= hi)
    assert torch.all(((y - x).abs() <= s / 2 * (1 + 1e-5) + 1e-6 * x.abs())[inside])


@settings(max_examples=40, deadline=None, database=None)
@given(**_common)
def test_property_symmetric_act_quantizer(bits, step, shape, seed, spread):
    q = _set(ActQuantizer(bits), [step])
    assert (q.qmin, q.qmax) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    s = float(q.step)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * (s * q.qmax * spread)
    y = q(x)
    assert y.shape == x.shape
    _check_grid(x, y, s, 0, q.qmin, q.qmax)


@settings(max_examples=40, deadline=None, database=None)
@given(zero=st.floats(0.0, 1.0), **_common)
def test_property_asymmetric_act_quantizer(bits, step, shape, seed, spread, zero):
    q = ActQuantizer(bits, symmetric=False)
    assert (q.qmin, q.qmax) == (0, 2**bits - 1)
    _set(q, [step], [zero * q.qmax])
    s, z = float(q.step), float(torch.round(q.zero_point.detach()))
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen, dtype=F64) * (q.qmax * spread) + (q.qmax / 2 - z)) * s
    y = q(x.float())
    assert y.shape == x.shape
    _check_grid(x.float(), y, s, z, q.qmin, q.qmax)


@settings(max_examples=40, deadline=None, database=None)
@given(axis_pick=st.integers(0, 3), **_common)
def test_property_weight_quantizer(bits, step, shape, seed, spread, axis_pick):
    axis = axis_pick % len(shape)
    channels = shape[axis]
    q = WeightQuantizer(bits, channels, axis=axis)
    assert (q.qmin, q.qmax) == (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    gen = torch.Generator().manual_seed(seed)
    steps = step * (0.5 + torch.rand(channels, generator=gen))
    _set(q, steps)
    s = q.step.detach().to(F64).reshape(_bshape(channels, len(shape), axis))
    x = (torch.randn(shape, generator=gen, dtype=F64) * (s * q.qmax * spread)).float()
    y = q(x)
    assert y.shape == x.shape
    _check_grid(x, y, s, 0, q.qmin, q.qmax)


# ----------------------------------------------------------------------------------------------------------------
# weight quantizer


@pytest.mark.parametrize('bits', [2, 4, 8, 16])
def test_weight_and_act_ranges(bits):
    half = 2 ** (bits - 1)
    w = WeightQuantizer(bits, 3)
    assert (w.qmin, w.qmax) == (-(half - 1), half - 1)
    a = ActQuantizer(bits)
    assert (a.qmin, a.qmax) == (-half, half - 1)
    u = ActQuantizer(bits, symmetric=False)
    assert (u.qmin, u.qmax) == (0, 2**bits - 1)
    assert w.symmetric and a.symmetric and not u.symmetric
    assert isinstance(u.zero_point, nn.Parameter) and not isinstance(a.zero_point, nn.Parameter)


def test_weight_quantizer_never_uses_the_most_negative_code():
    q = _set(WeightQuantizer(4, 2), [0.1, 0.1])
    y = q(torch.tensor([[-5.0, 5.0], [-0.75, 0.74]]))
    assert torch.allclose(y, torch.tensor([[-0.7, 0.7], [-0.7, 0.7]]))


def test_init_from_weight_max_conv():
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 6, 3)
    q = WeightQuantizer(8, 6, axis=0)
    q.init_from_weight(conv.weight, 'max')
    expected = conv.weight.detach().abs().amax(dim=(1, 2, 3)) / 127
    assert torch.allclose(q.step.detach(), expected, rtol=1e-6, atol=0)
    assert bool(q.initialized)
    # the largest weight of each channel is exactly representable (no clipping)
    y = q(conv.weight.detach())
    assert torch.allclose(y.abs().amax(dim=(1, 2, 3)), conv.weight.detach().abs().amax(dim=(1, 2, 3)), rtol=1e-6)


def test_init_from_weight_max_conv_transpose_uses_axis_1():
    torch.manual_seed(5)
    deconv = nn.ConvTranspose2d(5, 3, 2, stride=2)  # weight (C_in=5, C_out=3, 2, 2)
    qd = QuantConvTranspose2d.from_float(deconv, QuantConfig(weight_bits=6))
    assert qd.weight_quant.axis == 1 and qd.weight_quant.step.shape == (3,)
    expected = deconv.weight.detach().abs().amax(dim=(0, 2, 3)) / 31
    assert torch.allclose(qd.weight_quant.step.detach(), expected, rtol=1e-6, atol=0)
    w = WeightQuantizer(8, 3, axis=1)
    w.init_from_weight(deconv.weight)
    assert torch.allclose(w.step.detach(), deconv.weight.detach().abs().amax(dim=(0, 2, 3)) / 127, rtol=1e-6)


@pytest.mark.parametrize('bits', [3, 4, 8])
def test_init_from_weight_mse_not_worse_than_max(bits):
    torch.manual_seed(6)
    weight = torch.randn(8, 16, 3, 3) * torch.rand(8, 1, 1, 1)
    q_max, q_mse = WeightQuantizer(bits, 8), WeightQuantizer(bits, 8)
    q_max.init_from_weight(weight, 'max')
    q_mse.init_from_weight(weight, 'mse')
    w64 = weight.to(F64)

    def err(q):
        s = q.step.detach().to(F64).reshape(8, 1, 1, 1)
        y = (torch.clamp(torch.round(w64 / s), q.qmin, q.qmax)) * s
        return ((y - w64) ** 2).sum(dim=(1, 2, 3))

    e_max, e_mse = err(q_max), err(q_mse)
    assert torch.all(e_mse <= e_max * (1 + 1e-6))
    assert torch.all(q_mse.step <= q_max.step * (1 + 1e-6))
    assert torch.all(q_mse.step >= q_max.step * 0.3 * (1 - 1e-6))
    if bits <= 4:  # clipping the Gaussian tails pays off at low bit widths
        assert e_mse.sum() < 0.95 * e_max.sum()


def test_uninitialized_weight_quantizer_initializes_itself_from_max():
    torch.manual_seed(7)
    w = torch.randn(4, 3)
    q = WeightQuantizer(8, 4)
    assert not bool(q.initialized)
    q(w)
    assert bool(q.initialized)
    assert torch.allclose(q.step.detach(), w.abs().amax(1) / 127, rtol=1e-6)


def test_quant_conv2d_4bit_end_to_end():
    torch.manual_seed(8)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    qconv = QuantConv2d.from_float(conv, QuantConfig.from_options({'bits': 4}))
    assert qconv.weight is conv.weight
    assert (qconv.weight_quant.qmin, qconv.weight_quant.qmax) == (-7, 7)
    assert (qconv.act_quant.qmin, qconv.act_quant.qmax) == (-8, 7)
    x = torch.randn(2, 3, 6, 6)
    calibrate(qconv, [x], method='max')
    assert torch.allclose(qconv.act_quant.step, x.abs().max() / 7)
    y = qconv(x)
    assert y.shape == (2, 5, 6, 6)
    # the weights the convolution used are on the 4-bit grid
    wq = qconv.weight_quant(qconv.weight).detach() / qconv.weight_quant.step.detach().reshape(5, 1, 1, 1)
    assert torch.allclose(wq, wq.round(), atol=1e-4) and wq.round().abs().max() <= 7
    # and the output is exactly the float convolution of the fake-quantized input and weight
    ref = nn.functional.conv2d(qconv.act_quant(x), qconv.weight_quant(qconv.weight), qconv.bias, padding=1)
    assert torch.allclose(y, ref, atol=1e-6)
    y.square().mean().backward()
    for p in (qconv.weight, qconv.bias, qconv.weight_quant.step, qconv.act_quant.step):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------------
# calibration


def _calibrated(x, method, bits=8, symmetric=True, percentile=99.99):
    model = nn.Sequential(ActQuantizer(bits, symmetric=symmetric))
    assert calibrate(model, [x], method=method, percentile=percentile) == 1
    return model[0]


def test_calibrate_max_symmetric():
    x = torch.tensor([[0.5, -2.54, 1.0], [0.0, 2.0, -0.1]])
    q = _calibrated(x, 'max')
    assert math.isclose(float(q.step), 2.54 / 127, rel_tol=1e-6)
    assert bool(q.initialized) and q.observer is None
    assert torch.allclose(q(x), x, atol=float(q.step) / 2)


def test_calibrate_max_uses_every_batch():
    model = nn.Sequential(nn.Identity(), ActQuantizer(8))
    calibrate(model, [torch.tensor([1.0, -0.5]), torch.tensor([3.81, 0.2]), torch.tensor([-1.27])], method='max')
    assert math.isclose(float(model[1].step), 3.81 / 127, rel_tol=1e-6)


def test_calibrate_percentile_ignores_an_outlier():
    torch.manual_seed(9)
    x = torch.randn(20000) * 0.1
    x[123] = 50.0
    q_max = _calibrated(x, 'max')
    q_pct = _calibrated(x, 'percentile', percentile=99.9)
    assert math.isclose(float(q_max.step), 50.0 / 127, rel_tol=1e-6)
    expected = float(torch.quantile(x.abs(), 0.999)) / 127
    assert math.isclose(float(q_pct.step), expected, rel_tol=1e-5)
    assert float(q_pct.step) < 0.02 * float(q_max.step)


@pytest.mark.parametrize('bits', [4, 8])
def test_calibrate_mse_not_worse_than_max(bits):
    torch.manual_seed(10)
    x = torch.randn(5000) * torch.rand(5000) ** 2
    q_max = _calibrated(x, 'max', bits)
    q_mse = _calibrated(x, 'mse', bits)
    with torch.no_grad():
        e_max = float(((q_max(x) - x) ** 2).mean())
        e_mse = float(((q_mse(x) - x) ** 2).mean())
    assert e_mse <= e_max * (1 + 1e-6)
    assert float(q_mse.step) <= float(q_max.step) * (1 + 1e-6)
    if bits == 4:
        assert e_mse < 0.9 * e_max


def test_calibrate_max_asymmetric():
    x = torch.tensor([-1.0, 0.3, 2.0, 3.0, -0.2])
    q = _calibrated(x, 'max', symmetric=False)
    s = 4.0 / 255
    assert math.isclose(float(q.step), s, rel_tol=1e-6)
    assert float(q.zero_point) == round(1.0 / s) == 64
    lo, hi = (q.qmin - float(q.zero_point)) * float(q.step), (q.qmax - float(q.zero_point)) * float(q.step)
    assert lo <= -1.0 + float(q.step) / 2 and hi >= 3.0 - float(q.step) / 2 and lo <= 0 <= hi
    assert q(torch.zeros(4)).eq(0).all(), 'zero must be exact'
    # a positive-only activation still gets a range that contains 0: zero point 0, step max / 255
    q_pos = _calibrated(torch.tensor([0.5, 1.0, 2.55]), 'max', symmetric=False)
    assert float(q_pos.zero_point) == 0.0
    assert math.isclose(float(q_pos.step), 2.55 / 255, rel_tol=1e-6)
    # a negative-only one: zero point qmax
    q_neg = _calibrated(torch.tensor([-0.5, -2.55]), 'max', symmetric=False)
    assert float(q_neg.zero_point) == 255.0


@pytest.mark.parametrize('method', ['percentile', 'mse'])
def test_calibrate_asymmetric_other_methods_contain_zero(method):
    torch.manual_seed(11)
    x = torch.rand(4000) * 3 - 0.5
    q = _calibrated(x, method, symmetric=False)
    z = float(q.zero_point)
    assert z == round(z) and q.qmin <= z <= q.qmax
    assert q(torch.zeros(2)).eq(0).all()
    with torch.no_grad():
        assert float(((q(x) - x) ** 2).mean()) < float(q.step) ** 2


def test_act_quantizer_before_calibration_raises():
    q = ActQuantizer(8)
    with pytest.raises(RuntimeError, match='calibrat'):
        q(torch.randn(3))
    model = nn.Sequential(ActQuantizer(8, symmetric=False))
    with pytest.raises(RuntimeError, match='calibrat'):
        model(torch.randn(3))


def test_disabled_act_quantizer_is_identity():
    q = ActQuantizer(8)
    q.enabled = False
    x = torch.randn(5)
    assert torch.equal(q(x), x)
    assert calibrate(nn.Sequential(q), [x]) == 0


def test_calibrate_without_batches_raises():
    model = nn.Sequential(ActQuantizer(8))
    with pytest.raises(RuntimeError, match='no batches'):
        calibrate(model, [])
    assert model[0].observer is None and not bool(model[0].initialized)


def test_calibrate_unreached_quantizer_raises():
    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = ActQuantizer(8), ActQuantizer(8)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(RuntimeError, match='unused'):
        calibrate(TwoBranches(), [torch.randn(3)])


def test_calibrate_restores_training_mode():
    model = nn.Sequential(ActQuantizer(8)).train()
    calibrate(model, [torch.randn(4)])
    assert model.training
    model.eval()
    calibrate(model, [torch.randn(4)])
    assert not model.training


# ----------------------------------------------------------------------------------------------------------------
# QuantConfig


def test_config_defaults_and_bits_shorthand():
    cfg = QuantConfig()
    assert (cfg.weight_bits, cfg.act_bits, cfg.act_symmetric) == (8, 8, True)
    cfg = QuantConfig.from_options({'bits': 4})
    assert (cfg.weight_bits, cfg.act_bits) == (4, 4)
    cfg = QuantConfig.from_options({'bits': 4, 'act_bits': 8})
    assert (cfg.weight_bits, cfg.act_bits) == (4, 8)
    assert QuantConfig.from_options(None) == QuantConfig()
    assert QuantConfig.from_options({'keep_fp32': 'head'}).keep_fp32 == ['head']


@pytest.mark.parametrize(
    'key, suggestion',
    [('calibraton', 'calibration'), ('weight_bit', 'weight_bits'), ('bit', 'bits'), ('keep_fp23', 'keep_fp32')],
)
def test_config_unknown_key_suggests_the_close_one(key, suggestion):
    with pytest.raises(ValueError, match=rf"quant\.{key}: unknown key '{key}'.*Did you mean '{suggestion}'"):
        QuantConfig.from_options({key: 1})


def test_config_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ValueError, match=r'quant\.zzzzzz: unknown key.*Valid: act_bits, act_symmetric, bits, '):
        QuantConfig.from_options({'zzzzzz': 1})


@pytest.mark.parametrize(
    'options, key',
    [
        ({'bits': 1}, 'bits'),
        ({'act_bits': 17}, 'act_bits'),
        ({'weight_bits': 4.0}, 'weight_bits'),
        ({'weight_bits': True}, 'weight_bits'),
        ({'calibration': 'foo'}, 'calibration'),
        ({'weight_init': 'percentile'}, 'weight_init'),
        ({'calib_batches': 0}, 'calib_batches'),
        ({'percentile': 20}, 'percentile'),
        ({'percentile': 100.5}, 'percentile'),
        ({'act_symmetric': 'yes'}, 'act_symmetric'),
        ({'keep_fp32': [3]}, 'keep_fp32'),
    ],
)
def test_config_bad_values_name_the_key(options, key):
    with pytest.raises(ValueError, match=rf'quant\.{key}'):
        QuantConfig.from_options(options)
