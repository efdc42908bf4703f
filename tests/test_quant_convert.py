"""Tests of BatchNorm folding, quantize_model, checkpoints of quantized networks, the EFM arch under quantization,
and the complexity counters."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

from qdr_plugin.quant import (
    Add,
    Concat,
    Mul,
    QuantAdd,
    QuantConcat,
    QuantConfig,
    QuantConv2d,
    QuantConvTranspose2d,
    QuantLinear,
    QuantMul,
    calibrate,
    fold_batchnorm,
    is_quantized,
    is_quantized_state_dict,
    project_step_sizes,
    quantize_model,
    quantizer_parameters,
    quantizers,
    set_quant_enabled,
)


def _randomize_bn(bn: nn.BatchNorm2d, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
        bn.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
        bn.weight.copy_(torch.randn(c, generator=gen))
        bn.bias.copy_(torch.randn(c, generator=gen) * 0.3)


class Net(nn.Module):
    """Every convertible layer type: Conv2d (with a BatchNorm to fold, depth-wise, grouped, strided),
    ConvTranspose2d, Linear, Add, Mul, Concat."""

    def __init__(self, bn_seed: int = 0):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        _randomize_bn(self.head[1], bn_seed)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 8, 1, groups=2)
        self.down = nn.Conv2d(8, 12, 2, stride=2)
        self.up = nn.ConvTranspose2d(12, 8, 2, stride=2)  # weight (12, 8, 2, 2): output channels on axis 1
        self.act = nn.ReLU()
        self.add, self.mul, self.cat = Add(), Mul(), Concat(1)
        self.tail = nn.Conv2d(16, 3, 1)
        self.fc = nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        g = self.grouped(self.dw(h))
        u = self.up(self.act(self.down(g)))
        s = self.add(h, u)
        m = self.mul(s, torch.sigmoid(g))
        out = self.tail(self.cat(s, m))
        return self.fc(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


CONVERTED = {
    'head.0': QuantConv2d,
    'dw': QuantConv2d,
    'grouped': QuantConv2d,
    'down': QuantConv2d,
    'up': QuantConvTranspose2d,
    'add': QuantAdd,
    'mul': QuantMul,
    'cat': QuantConcat,
    'tail': QuantConv2d,
    'fc': QuantLinear,
}


def _input(seed: int = 0, shape=(2, 3, 8, 8)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ----------------------------------------------------------------------------------------------------------------
# BatchNorm folding


def test_fold_batchnorm_preserves_eval_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU()).eval()
    _randomize_bn(model[1], 1)
    x = _input(1, (2, 3, 7, 9))
    with torch.no_grad():
        before = model(x)
    assert model[0].bias is None
    assert fold_batchnorm(model) == 1
    assert isinstance(model[1], nn.Identity)
    assert isinstance(model[0].bias, nn.Parameter) and model[0].bias.shape == (6,)
    with torch.no_grad():
        after = model(x)
    assert before.abs().max() > 0.1
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_with_conv_bias_and_nested_sequentials():
    torch.manual_seed(1)
    inner = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), inner).eval()
    _randomize_bn(model[1], 2)
    _randomize_bn(inner[1], 3)
    x = _input(2, (1, 2, 5, 5))
    with torch.no_grad():
        before = model(x)
    assert fold_batchnorm(model) == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# quantize_model


def test_quantize_model_converts_every_layer_type_and_keeps_parameters():
    torch.manual_seed(2)
    model = Net()
    params = {name: (m.weight, m.bias) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    params['up'] = (model.up.weight, model.up.bias)
    assert quantize_model(model) is model
    modules = dict(model.named_modules())
    for name, cls in CONVERTED.items():
        assert type(modules[name]) is cls, name
    assert isinstance(modules['head.1'], nn.Identity)  # the folded BatchNorm
    assert not any(type(m) in (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, Add, Mul, Concat) for m in model.modules())
    for name, (weight, bias) in params.items():
        assert modules[name].weight is weight, name
        if name != 'head.0':  # that conv had no bias: folding gave it one
            assert modules[name].bias is bias, name
    assert isinstance(model.head[0].bias, nn.Parameter)
    # the layer hyper-parameters survive
    assert model.dw.groups == 8 and model.grouped.groups == 2 and model.down.stride == (2, 2)
    assert model.up.stride == (2, 2) and model.cat.dim == 1
    # per-output-channel weight steps: axis 0, except axis 1 for the transposed convolution
    assert model.dw.weight_quant.step.shape == (8,) and model.down.weight_quant.step.shape == (12,)
    assert model.up.weight_quant.axis == 1 and model.up.weight_quant.step.shape == (8,)
    assert model.fc.weight_quant.step.shape == (5,)
    assert torch.allclose(model.dw.weight_quant.step, model.dw.weight.detach().abs().amax((1, 2, 3)) / 127)
    assert all(bool(q.initialized) for _, q in quantizers(model) if q.axis is not None)
    assert is_quantized(model)
    # 7 weighted layers (2 quantizers each) + Add and Mul (2 each) + Concat (1), minus 3 tied activation
    # quantizers: h feeds dw and add (one quantizer), s feeds mul and cat (one quantizer), and tail's input is the
    # concatenation of cat's quantized inputs (a copy: cat's quantizer); plus the output quantizer of tail (its
    # output is permuted before fc); grouped's output also feeds a float sigmoid, and its output quantizer is the one
    # of down's input
    assert len(list(quantizers(model))) == 7 * 2 + 2 * 2 + 1 - 3 + 1
    assert model.tail.act_quant is model.cat.quant
    assert model.grouped.out_quant is model.down.act_quant and model.tail.out_quant is not None
    assert model.dw.act_quant is model.add.quant_a and model.mul.quant_a is model.cat.quant


def test_optimizer_built_before_conversion_still_trains_the_weights():
    torch.manual_seed(3)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    quantize_model(model)
    calibrate(model, [_input()])
    before = model.tail.weight.detach().clone()
    opt.zero_grad()
    model(_input()).square().mean().backward()
    opt.step()
    assert not torch.equal(model.tail.weight, before)


def test_keep_fp32_patterns():
    torch.manual_seed(4)
    model = Net()
    quantize_model(model, QuantConfig(keep_fp32=['head.*', 'up', 'c?t']))
    assert type(model.head[0]) is nn.Conv2d and type(model.up) is nn.ConvTranspose2d and type(model.cat) is Concat
    assert type(model.dw) is QuantConv2d and type(model.tail) is QuantConv2d and type(model.fc) is QuantLinear
    nested = nn.Sequential(
        OrderedDict(stem=nn.Conv2d(1, 4, 3), body=nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1)))
    )
    quantize_model(nested, QuantConfig(keep_fp32=['body.*']))
    assert type(nested.stem) is QuantConv2d
    assert type(nested.body[0]) is nn.Conv2d and type(nested.body[2]) is nn.Conv2d


def test_quantize_model_without_quantizable_layers_raises():
    with pytest.raises(ValueError, match='nothing to quantize'):
        quantize_model(nn.Sequential(nn.ReLU(), nn.Identity()))
    with pytest.raises(ValueError, match='nothing to quantize'):
        quantize_model(nn.Sequential(nn.Conv2d(1, 1, 1)), QuantConfig(keep_fp32=['*']))


def test_unfoldable_batchnorm_raises():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match=r"BatchNorm layers \['2'\]"):
        quantize_model(model)
    with pytest.raises(ValueError, match='BatchNorm'):
        quantize_model(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), QuantConfig(fold_bn=False))


def test_grouped_conv_transpose_is_rejected():
    with pytest.raises(ValueError, match='grouped ConvTranspose2d'):
        quantize_model(nn.Sequential(nn.ConvTranspose2d(4, 4, 2, groups=2)))


def test_quantizing_twice_raises():
    model = quantize_model(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(ValueError, match='already quantized'):
        quantize_model(model)


# ----------------------------------------------------------------------------------------------------------------
# accuracy against the float network


def test_disabled_quantization_equals_the_float_network():
    torch.manual_seed(5)
    model = Net().eval()
    unfolded = copy.deepcopy(model)
    reference = copy.deepcopy(model)
    fold_batchnorm(reference)  # the same arithmetic quantize_model does first
    quantize_model(model)
    set_quant_enabled(model, False)
    x = _input(5)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
        # and, up to float rounding, the network before folding
        torch.testing.assert_close(model(x), unfolded(x), atol=1e-5, rtol=1e-5)
    set_quant_enabled(model, True)
    assert all(q.enabled for _, q in quantizers(model))
    with pytest.raises(RuntimeError, match='calibrat'):
        model(x)


@pytest.mark.parametrize('symmetric', [True, False])
def test_quantized_output_close_to_float_and_4bit_worse_than_8bit(symmetric):
    torch.manual_seed(6)
    float_model = Net().eval()
    x, calib = _input(6), [_input(7), _input(8)]
    with torch.no_grad():
        ref = float_model(x)
    errors = {}
    for bits in (8, 4):
        model = quantize_model(
            copy.deepcopy(float_model),
            QuantConfig(weight_bits=bits, act_bits=bits, act_symmetric=symmetric, keep_first_last=False),
        )
        tail_output = 1 if bits == 8 else 0  # the integer-kernel point on the tail's output: 8-bit activations only
        assert calibrate(model, calib, method='max') == 7 + 2 * 2 + 1 - 3 + tail_output  # layers, Add, Mul, Concat,
        # 3 tied
        with torch.no_grad():
            out = model(x)
        assert out.shape == ref.shape and not torch.equal(out, ref)
        errors[bits] = _rel_err(out, ref)
    assert errors[8] < 0.03
    assert errors[4] > 2 * errors[8]
    assert errors[4] < 0.6


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


@pytest.mark.parametrize('symmetric', [True, False])
def test_state_dict_round_trip(tmp_path, symmetric):
    cfg = QuantConfig(weight_bits=6, act_bits=6, act_symmetric=symmetric, keep_first_last=False)
    torch.manual_seed(7)
    model = quantize_model(Net(bn_seed=7), cfg)
    calibrate(model, [_input(9), _input(10)], method=cfg.calibration)
    steps_before = {n: q.step.detach().clone() for n, q in quantizers(model)}
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model(_input(11)).square().mean().backward()
    opt.step()
    assert any(not torch.equal(q.step, steps_before[n]) for n, q in quantizers(model)), 'the steps must have moved'
    if not symmetric:
        zero_points = torch.cat([q.zero_point.detach() for _, q in quantizers(model) if not q.symmetric])
        assert not torch.equal(zero_points, zero_points.round()), 'fractional zero points after a step'
    path = tmp_path / 'quantized.pth'
    state = model.state_dict()
    assert is_quantized_state_dict(state)
    assert not is_quantized_state_dict(Net().state_dict())
    assert any(k.endswith('.zero_point') for k in state) == (not symmetric)  # symmetric zero points are not saved
    torch.save(state, path)

    torch.manual_seed(123)
    fresh = quantize_model(Net(bn_seed=123), cfg)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    fresh.eval()
    x = _input(12)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    pairs = list(zip(quantizers(model), quantizers(fresh), strict=True))
    assert len(pairs) == 16  # 6-bit activations: no integer-kernel point on the tail's output
    for (name, q), (fresh_name, fq) in pairs:
        assert name == fresh_name
        assert torch.equal(fq.step, q.step) and torch.equal(fq.zero_point, q.zero_point)
        assert bool(fq.initialized)
        assert fq.symmetric is q.symmetric


def test_float_state_dict_does_not_look_quantized():
    torch.manual_seed(8)
    assert not is_quantized_state_dict(Net().state_dict())
    assert not is_quantized_state_dict({'layer.step': torch.ones(1)})
    assert is_quantized_state_dict({'a.step': torch.ones(1), 'a.initialized': torch.tensor(True)})


# ----------------------------------------------------------------------------------------------------------------
# EFM


def test_efm_quantized_forward_backward():
    import qdr_plugin  # noqa: F401  (torchvision alias before basicsr)
    from qdr_plugin.archs.efm_arch import EFM

    torch.manual_seed(9)
    model = EFM(in_ch=1, width=4, depth=2)
    n_conv = sum(type(m) is nn.Conv2d for m in model.modules())
    n_add = sum(type(m) is Add for m in model.modules())
    n_mul = sum(type(m) is Mul for m in model.modules())
    n_deconv = sum(type(m) is nn.ConvTranspose2d for m in model.modules())
    n_blocks = len(model.encoders) + len(model.bottleneck) + len(model.decoders)
    assert n_conv > 10 and n_add > 0 and n_mul == n_blocks and n_deconv == model.depth
    quantize_model(model)
    assert sum(type(m) is QuantConv2d for m in model.modules()) == n_conv
    assert sum(type(m) is QuantAdd for m in model.modules()) == n_add
    assert not any(type(m) in (nn.Conv2d, nn.ConvTranspose2d, Add, Mul) for m in model.modules())
    # one activation quantizer per conv / deconv input, two per Add, one per LDG Mul (the gate stays float), minus
    # the tied ones: in every block the input feeds conv1 and the residual add, F feeds the LDG dwconv and its
    # multiply; the (unshuffled) network input feeds the head and the global residual; each encoder output feeds
    # the down-sampling conv and its decoder's skip addition; plus the output quantizer of every LDG's 1x1
    # projection (its output feeds the float sigmoid)
    n_act = n_conv + n_deconv + 2 * n_add + n_mul - 2 * n_blocks - 1 - model.depth + n_blocks
    calib = torch.rand(1, 1, 20, 28, generator=torch.Generator().manual_seed(0))
    assert calibrate(model, [calib]) == n_act
    assert model.head.act_quant is model.residual.quant_a

    x = (torch.rand(1, 1, 19, 27, generator=torch.Generator().manual_seed(1)) * 0.6 + 0.2).requires_grad_()
    out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    out.square().mean().backward()
    params = quantizer_parameters(model)
    assert len(params) == n_conv + n_deconv + n_act  # one step per weight / activation quantizer (symmetric)
    for p in params:
        assert isinstance(p, nn.Parameter) and p.is_leaf and p.requires_grad
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert sum(float(p.grad.abs().sum()) > 0 for p in params) > len(params) // 2
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------------
# complexity


def test_count_macs_single_conv():
    from qdr_plugin.utils.complexity import count_macs

    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, (1, 3, 16, 16)) == 16 * 16 * 8 * 3 * 9
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    assert count_macs(dw, (1, 8, 16, 16)) == 16 * 16 * 8 * 9
    deconv = nn.ConvTranspose2d(4, 2, 2, stride=2)
    assert count_macs(deconv, (1, 4, 5, 5)) == 5 * 5 * 4 * 2 * 2 * 2
    assert count_macs(nn.Linear(6, 3), (2, 6)) == 2 * 6 * 3


@pytest.mark.parametrize('symmetric', [True, False])
def test_count_parameters_excludes_quantizer_state(symmetric):
    from qdr_plugin.utils.complexity import count_parameters

    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1, bias=False))
    expected = 8 * 3 * 9 + 8 + 2 * 8
    assert count_parameters(model) == expected
    quantize_model(model, QuantConfig(act_symmetric=symmetric))
    assert count_parameters(model) == expected
    extra = (8 + 1) + (2 + 1) + (0 if symmetric else 2) + (1 if symmetric else 2)  # + the last conv's output
    assert sum(p.numel() for p in model.parameters()) == expected + extra


class _Block(nn.Module):
    """``x -> conv(x) + x``: the block input feeds a conv and the residual add."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(self.conv(x), x)


def test_tied_quantizer_quantizes_a_tensor_once_and_sees_in_place_changes():
    torch.manual_seed(11)
    block = quantize_model(_Block())
    assert block.conv.act_quant is block.add.quant_b
    x = torch.randn(1, 2, 8, 8)
    calibrate(block, [x])
    q = block.conv.act_quant
    first = q(x)
    assert q(x) is first  # the same, unmodified tensor: the output is reused
    x.mul_(2.0)
    assert q(x) is not first  # modified in place: quantized again
    assert torch.equal(q(x), q.quantize(x))


def test_tied_network_reloads_into_identical_network(tmp_path):
    torch.manual_seed(12)
    block = quantize_model(_Block())
    calibrate(block, [torch.randn(2, 2, 8, 8)])
    path = tmp_path / 'tied.pth'
    torch.save(block.state_dict(), path)
    fresh = quantize_model(_Block())
    fresh.load_state_dict(torch.load(path, weights_only=True))
    assert fresh.conv.act_quant is fresh.add.quant_b
    x = torch.randn(1, 2, 9, 7)
    assert torch.equal(block(x), fresh(x))


def test_project_step_sizes_keeps_steps_positive_under_adam():
    """Adam at a learning rate far above a weight step pushes steps through zero; the projection stops them at
    max|w_c| / (4 q_max), so no channel dies and every step has an INT8 form."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
    quantize_model(net, QuantConfig(calibration='max'))
    calibrate(net, [torch.rand(2, 1, 16, 16)], method='max')
    optimizer = torch.optim.Adam(quantizer_parameters(net), lr=1e-2)
    first = net[0]
    for _ in range(20):
        optimizer.zero_grad()
        net(torch.rand(2, 1, 16, 16)).square().mean().backward()  # pushes the output, so the steps, towards 0
        optimizer.step()
        project_step_sizes(net)
    floor = first.weight.detach().abs().flatten(1).amax(1) / (4 * first.weight_quant.qmax)
    assert bool((first.weight_quant.step >= floor - 1e-12).all()) and bool((first.weight_quant.step > 0).all())
    first.weight_quant.step.data[0] = -1.0
    assert project_step_sizes(net) >= 1 and float(first.weight_quant.step[0]) == pytest.approx(float(floor[0]))
