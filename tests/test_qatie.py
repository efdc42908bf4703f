"""QATIE: the HybridMixUNet arch (sizes, any input size, registry, INT8 quantization and ONNX export) and QATIELoss."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.metrics.psnr_ssim import calculate_psnr_pt
from basicsr.utils.registry import ARCH_REGISTRY, LOSS_REGISTRY
from conftest import NO_VNNI

import qdr_plugin  # noqa: F401  (registration)
from qdr_plugin.archs import HybridMixUNet
from qdr_plugin.archs.hybridmix_arch import GatedDown
from qdr_plugin.deploy import check_onnx, export_onnx
from qdr_plugin.losses.qatie_loss import QATIELoss, luma
from qdr_plugin.option_rules import OptionsError
from qdr_plugin.quant import QuantConfig, calibrate, is_quantized, quantize_model
from qdr_plugin.quant.modules import QuantAdd, QuantMul

pytestmark = pytest.mark.usefixtures('one_thread')


# ------------------------------------------------------------------------------------------------------ the arch
@pytest.mark.parametrize(('width', 'millions'), [(16, 0.23), (24, 0.52), (32, 0.92), (64, 3.65)])
def test_parameter_counts_match_qatie(width, millions):
    with torch.device('meta'):  # shapes only: no memory, no init time
        net = HybridMixUNet(width=width)
    count = sum(p.numel() for p in net.parameters())
    assert count == pytest.approx(millions * 1e6, rel=0.05)


@pytest.mark.parametrize('size', [(37, 29), (8, 8), (1, 5), (16, 23)])
def test_any_input_size_keeps_its_shape_and_stays_in_range(size):
    torch.manual_seed(0)
    net = HybridMixUNet(width=4).eval()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


def test_gray_input_and_default_out_ch():
    net = HybridMixUNet(in_ch=1, width=4, channel_mults=(1, 2)).eval()
    assert net.in_ch == 1 and net.depth == 1 and net.tail.out_channels == 1
    with torch.no_grad():
        assert net(torch.rand(2, 1, 9, 11)).shape == (2, 1, 9, 11)


def test_zero_residual_returns_the_clamped_input():
    net = HybridMixUNet(width=4).eval()
    with torch.no_grad():
        net.tail.weight.zero_()
        net.tail.bias.zero_()
        x = torch.rand(1, 3, 13, 10) * 1.4 - 0.2
        assert torch.equal(net(x), x.clamp(0, 1))


def test_gated_down_is_tanh_times_tanh_of_the_two_halves():
    torch.manual_seed(0)
    block = GatedDown(4, 3)
    x = torch.randn(2, 4, 8, 6)
    a, b = block.conv(x).chunk(2, dim=1)
    out = block(x)
    assert out.shape == (2, 3, 4, 3)
    assert torch.allclose(out, torch.tanh(a) * torch.tanh(b))
    assert float(out.abs().max()) < 1.0


def test_built_through_basicsr_and_registered():
    assert ARCH_REGISTRY.get('HybridMixUNet') is HybridMixUNet
    net = build_network({'type': 'HybridMixUNet', 'width': 8})
    assert isinstance(net, HybridMixUNet) and net.in_ch == 3
    assert net.head[0].out_channels == 8


def test_dfd_layer_is_the_lowest_resolution_feature():
    net = HybridMixUNet(width=4).eval()
    modules = dict(net.named_modules())
    assert HybridMixUNet.dfd_layer in modules
    assert net.decoder_layers == ['decoders.0', 'decoders.1', 'decoders.2']
    assert all(name in modules for name in net.decoder_layers)
    sizes: dict[str, int] = {}

    def record(name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                sizes[name] = output.shape[-2] * output.shape[-1]
        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in net.named_modules() if n]
    with torch.no_grad():
        net(torch.rand(1, 3, 32, 24))
    for hook in hooks:
        hook.remove()
    assert sizes[net.dfd_layer] == min(sizes.values()) == (32 // 8) * (24 // 8)


def test_only_int8_friendly_modules():
    allowed = (torch.nn.Conv2d, torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.Upsample, torch.nn.Sequential,
               torch.nn.ModuleList)
    for act in ('relu', 'lrelu'):
        for name, module in HybridMixUNet(width=4, act=act).named_modules():
            if module.__module__.startswith('torch.nn'):
                assert isinstance(module, allowed), name
            if isinstance(module, torch.nn.Upsample):
                assert module.mode == 'nearest', name


@pytest.mark.parametrize(('key', 'value', 'problem'), [
    ('width', 0, 'must be a positive integer'),
    ('width', '32', 'must be a positive integer'),
    ('mid_blocks', -1, 'must be an integer >= 0'),
    ('channel_mults', [1], 'must be a list of at least two positive integers'),
    ('channel_mults', [1, 0, 2], 'must be a list of at least two positive integers'),
    ('act', 'gelu', 'must be one of relu, lrelu'),
    ('out_ch', 1, 'differs from in_ch (3)'),
])
def test_options_are_checked_with_the_key_path(key, value, problem):
    with pytest.raises(OptionsError, match=f'options error at network_g.{key}: ') as error:
        HybridMixUNet.check_options({key: value}, 'network_g')
    assert problem in str(error.value)
    with pytest.raises(OptionsError, match=f'at HybridMixUNet.{key}: '):
        HybridMixUNet(**{key: value})


def test_preflight_checks_network_g():
    from qdr_plugin.basicsr_options import check_network

    checked = check_network({'network_g': {'type': 'HybridMixUNet', 'width': 8}})
    assert checked['channel_mults'] == (1, 2, 3, 3) and checked['in_ch'] == 3
    with pytest.raises(OptionsError, match='network_g.width: must be a positive integer'):
        check_network({'network_g': {'type': 'HybridMixUNet', 'width': 0}})


@pytest.fixture(scope='module')
def quantized_pair() -> tuple[HybridMixUNet, HybridMixUNet]:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    fp32 = build_network({'type': 'HybridMixUNet', 'width': 8}).eval()
    int8 = quantize_model(copy.deepcopy(fp32), QuantConfig(calibration='max'))
    calibrate(int8, [torch.rand(1, 3, 24, 24) for _ in range(2)], method='max')
    torch.set_num_threads(threads)
    return fp32, int8.eval()


def test_quantization_places_quantizers_on_the_gates_and_additions(quantized_pair):
    fp32, int8 = quantized_pair
    assert is_quantized(int8)
    assert all(isinstance(int8.downs[i].gate, QuantMul) for i in range(int8.depth))
    assert isinstance(int8.decoders[0].add_skip, QuantAdd) and isinstance(int8.residual, QuantAdd)
    assert isinstance(int8.residual.quant_a, torch.nn.Identity)  # the image reaches the output unrounded
    x = torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        y, ref = int8(x), fp32(x)
    assert y.shape == x.shape and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    assert 10 * math.log10(1 / float((y - ref).square().mean())) > 30


@pytest.mark.parametrize('kind', ['fp32', 'onnxruntime', 'tensorrt'])
def test_onnx_export_matches_pytorch(kind, quantized_pair, onnx_parity, tmp_path):
    fp32, int8 = quantized_pair
    net = fp32 if kind == 'fp32' else int8
    path = export_onnx(net, tmp_path / f'{kind}.onnx', 3, fp32=kind == 'fp32',
                       target='onnxruntime' if kind == 'fp32' else kind, no_vnni=NO_VNNI and kind == 'onnxruntime')
    max_abs, psnr = onnx_parity(path, net, torch.rand(1, 3, 37, 29))  # not the traced 64 x 64: dynamic H, W
    if kind == 'fp32':
        assert max_abs < 1e-4
    else:
        assert psnr > 45 and max_abs < 0.05
        assert check_onnx(path, kind, net).problems == []


# ------------------------------------------------------------------------------------------------------ the loss
def _pair(seed: int = 0, noise: float = 0.05, shape=(2, 3, 16, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.rand(*shape, generator=gen) * 0.8 + 0.1
    return (target + noise * torch.randn(*shape, generator=gen)).clamp(0, 1), target


def test_identical_images_give_the_floor():
    _, target = _pair()
    loss = QATIELoss()
    value = float(loss(target.clone(), target))
    assert math.isfinite(value)
    assert value == pytest.approx(2 * (50 - 100) / 100, abs=1e-4)  # PSNR at its 100 dB cap; cos and L_oa zero


def test_loss_is_the_sum_of_its_three_terms():
    pred, target = _pair()
    loss = QATIELoss(tau=0.05)
    psnr = loss.psnr_y(pred, target)
    cos = torch.nn.functional.cosine_similarity(pred.flatten(1), target.flatten(1), dim=1)
    d = (pred - target).abs()
    oa = ((1 + torch.tanh(d / 0.05)) * d).flatten(1).mean(1)
    expected = (2 * (50 - psnr) / 100 + (1 - cos) + oa).mean()
    assert torch.allclose(loss(pred, target), expected, atol=1e-6)
    assert torch.allclose(QATIELoss(reduction='none', loss_weight=2.0)(pred, target),
                          2 * (2 * (50 - loss.psnr_y(pred, target)) / 100 + (1 - cos)
                               + QATIELoss().outlier_l1(pred, target)), atol=1e-6)
    assert torch.allclose(QATIELoss(reduction='sum')(pred, target), QATIELoss(reduction='none')(pred, target).sum())


def test_worse_predictions_cost_more():
    values = [float(QATIELoss()(*_pair(noise=noise))) for noise in (0.01, 0.03, 0.1, 0.3)]
    assert values == sorted(values) and values[0] > -1.0


def test_gradient_flows_to_the_prediction():
    pred, target = _pair()
    pred.requires_grad_(True)
    QATIELoss()(pred, target).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and float(pred.grad.abs().sum()) > 0


def test_psnr_is_basicsrs_psnr_y_for_rgb_and_the_channel_itself_for_gray():
    pred, target = _pair(noise=0.03)
    ours = QATIELoss().psnr_y(pred, target)
    theirs = calculate_psnr_pt(pred, target, crop_border=0, test_y_channel=True)
    assert torch.allclose(ours.double(), theirs, atol=1e-3)
    # a change the luma does not see (R up, G down, in the ratio of their Y weights) leaves PSNR_Y at its cap
    shift = torch.zeros_like(target)
    shift[:, 0], shift[:, 1] = 0.01 * 128.553, -0.01 * 65.481
    assert torch.allclose(luma(target + shift / 255), luma(target), atol=1e-6)
    assert float(QATIELoss().psnr_y(target + shift / 255, target).min()) > 90
    gray_pred, gray_target = _pair(shape=(2, 1, 16, 12))
    mse = (gray_pred - gray_target).square().flatten(1).mean(1)
    assert torch.allclose(QATIELoss().psnr_y(gray_pred, gray_target), -10 * torch.log10(mse), atol=1e-4)
    with pytest.raises(ValueError, match='1- or 3-channel'):
        QATIELoss()(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8))


def test_outlier_weights_grow_with_the_error_and_are_detached():
    loss = QATIELoss(tau=0.1)
    target = torch.zeros(1, 1, 1, 5)
    pred = torch.tensor([0.0, 0.01, 0.05, 0.2, 0.8]).view(1, 1, 1, 5).requires_grad_(True)
    weights = loss.outlier_weights(pred, target)
    assert not weights.requires_grad
    w = weights.flatten().tolist()
    assert w[0] == 1.0 and all(a < b for a, b in zip(w, w[1:])) and w[-1] < 2.0
    loss.outlier_l1(pred, target).sum().backward()
    assert torch.allclose(pred.grad.flatten()[1:], weights.flatten()[1:] / 5)  # d(w |d|)/dp = w sign(d) / n


def test_element_weights_mask_pixels():
    pred, target = _pair()
    weight = torch.ones_like(pred)
    weight[..., 6:] = 0
    masked = QATIELoss(reduction='none')(pred, target, weight)
    cropped = QATIELoss(reduction='none')(pred[..., :6], target[..., :6])
    assert torch.allclose(masked, cropped, atol=1e-5)


def test_loss_registered_and_built_by_basicsr():
    assert LOSS_REGISTRY.get('QATIELoss') is QATIELoss
    loss = build_loss({'type': 'QATIELoss', 'loss_weight': 0.5, 'tau': 0.2})
    assert isinstance(loss, QATIELoss) and loss.loss_weight == 0.5 and loss.tau == 0.2
    pred, target = _pair()
    assert torch.allclose(loss(pred, target), 0.5 * QATIELoss(tau=0.2)(pred, target))
    with pytest.raises(ValueError, match='reduction'):
        QATIELoss(reduction='max')
    with pytest.raises(ValueError, match='tau must be a number > 0'):
        QATIELoss(tau=0)
