"""INT8 ONNX export: real files run by real ONNX Runtime, parity with the fake-quant network, the checker."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from basicsr.archs.srresnet_arch import MSRResNet
from torch import nn

from qdr_plugin.archs import EFM, DnCNN
from qdr_plugin.deploy import ExportError, check_onnx, export_onnx, onnxruntime_kernel_counts
from qdr_plugin.quant import QuantConfig, calibrate, quantize_model

DEMO_IMAGE = Path(__file__).resolve().parents[1] / 'datasets' / 'demo' / 'val' / '01.png'


def _noisy_crop(channels: int, top: int, left: int, height: int = 37, width: int = 53) -> torch.Tensor:
    """A crop of a real (demo) image with sigma-25 noise: the activations look like a denoiser's."""
    img = cv2.imread(str(DEMO_IMAGE), cv2.IMREAD_GRAYSCALE)[top : top + height, left : left + width] / 255.0
    noisy = img + np.random.default_rng(top).normal(0, 25 / 255, img.shape)
    return torch.from_numpy(noisy).float()[None, None].repeat(1, channels, 1, 1)


def _quantized(net: nn.Module, channels: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    quantize_model(net, QuantConfig(calibration='max'))
    calibrate(net, [_noisy_crop(channels, 100 + 20 * i, 60, 48, 48) for i in range(3)], method='max')
    return net.eval()


def _run(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return session.run(None, {'input': x.numpy()})[0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


NETWORKS = {
    'efm_gray': (lambda: EFM(in_ch=1, width=16, depth=2), 1, 1),
    'basicsr_msrresnet_x2': (lambda: MSRResNet(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=2), 3, 2),
}
# basicsr's own archs add with a plain `+`, which stays float until their additions get quantizers (issue 5), so
# the TensorRT rule "Q/DQ on both inputs of a residual add" is checked on the EFM only
CASES = [(n, t) for n in sorted(NETWORKS) for t in ('onnxruntime', 'tensorrt') if t == 'onnxruntime' or 'efm' in n]


@pytest.mark.parametrize(('name', 'target'), CASES)
def test_int8_export_matches_fake_quant_network(name, target, tmp_path):
    build, channels, scale = NETWORKS[name]
    net = _quantized(build(), channels)
    path = export_onnx(net, tmp_path / f'{name}.onnx', channels, target)
    report = check_onnx(path, target)
    assert not report.problems, report.summary()
    assert report.op_counts['QuantizeLinear'] > 0 and report.op_counts['DequantizeLinear'] > 0
    x = _noisy_crop(channels, 30, 40)
    with torch.no_grad():
        expected = net(x).numpy()
    got = _run(path, x)
    assert got.shape == (1, channels, 37 * scale, 53 * scale)
    # within 2 output quantization steps (the EFM's output is the sum of two quantized tensors; MSRResNet's output
    # conv is float, so its step is the 8-bit image step), and >= 50 dB between the two
    residual = getattr(net, 'residual', None)
    step = max(float(residual.quant_a.step), float(residual.quant_b.step)) if residual is not None else 1 / 255
    assert np.abs(got - expected).max() <= 2 * step + 1e-6
    assert _psnr(got, expected) >= 50


@pytest.mark.parametrize('target', ['onnxruntime', 'tensorrt'])
def test_other_efm_layouts_export_and_run(target, tmp_path):
    """RGB, full-resolution stem, pixel-shuffle up: a valid file whose output tracks the fake-quant network.

    Parity here is looser than above on purpose: ONNX Runtime and PyTorch sum convolutions in different orders, a
    value within ~1e-5 of a rounding tie can land on the other integer, and an untrained random network amplifies
    such a flip over the following layers (the parity bound is asserted above and measured on trained networks).
    """
    net = _quantized(EFM(in_ch=3, width=8, depth=2, stem='conv', up='shuffle'), 3)
    path = export_onnx(net, tmp_path / 'rgb.onnx', 3, target)
    assert not check_onnx(path, target).problems
    x = _noisy_crop(3, 30, 40)
    with torch.no_grad():
        expected = net(x).numpy()
    got = _run(path, x)
    assert got.shape == expected.shape and _psnr(got, expected) >= 40


def test_fp32_export_equals_float_network(tmp_path):
    net = EFM(in_ch=1, width=8, depth=2).eval()
    path = export_onnx(net, tmp_path / 'fp32.onnx', 1, fp32=True)
    x = torch.rand(2, 1, 40, 24)
    with torch.no_grad():
        expected = net(x).numpy()
    assert np.abs(_run(path, x) - expected).max() < 1e-5
    assert not check_onnx(path).problems


def test_onnxruntime_runs_the_convolutions_as_integer_kernels(tmp_path):
    net = _quantized(EFM(in_ch=1, width=16, depth=2), 1)
    path = export_onnx(net, tmp_path / 'efm.onnx', 1, 'onnxruntime')
    kernels = onnxruntime_kernel_counts(path)
    n_conv = sum(type(m).__name__ in ('QuantConv2d', 'QuantConvTranspose2d') for m in net.modules())
    n_gate = sum(1 for name, _ in net.named_modules() if name.endswith('ldg.proj'))
    n_deconv = sum(type(m).__name__ == 'QuantConvTranspose2d' for m in net.modules())
    # every convolution but the one-channel LDG gate projections (they feed a float sigmoid) and the 2x2 transposed
    # convolutions (ONNX Runtime has no integer ConvTranspose) is a QLinearConv
    assert n_deconv == 2 and kernels['ConvTranspose'] == n_deconv
    assert kernels['QLinearConv'] == n_conv - n_gate - n_deconv
    assert kernels['QLinearAdd'] > 0


def test_tensorrt_export_has_only_zero_zero_points_and_per_channel_weights(tmp_path):
    net = _quantized(EFM(in_ch=1, width=8, depth=2), 1)
    path = export_onnx(net, tmp_path / 'trt.onnx', 1, 'tensorrt')
    model = onnx.load(str(path))
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == 'Constant':
            values[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    qdq = [n for n in model.graph.node if n.op_type in ('QuantizeLinear', 'DequantizeLinear')]
    assert qdq and all(values[n.input[2]].dtype == np.int8 and not values[n.input[2]].any() for n in qdq)
    assert not {'QLinearConv', 'ConvInteger', 'DynamicQuantizeLinear'} & {n.op_type for n in model.graph.node}


def test_asymmetric_network_cannot_target_tensorrt(tmp_path):
    net = EFM(in_ch=1, width=8, depth=1)
    quantize_model(net, QuantConfig(act_symmetric=False))
    calibrate(net, [torch.rand(1, 1, 16, 16)], method='max')
    with pytest.raises(ExportError, match='asymmetric'):
        export_onnx(net, tmp_path / 'x.onnx', 1, 'tensorrt')


class _KthValue(nn.Module):
    def forward(self, x):
        return torch.kthvalue(x, 1, 1, True)[0].expand_as(x)


class _NetWithUnexportableOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.odd = _KthValue()
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return self.out(self.odd(self.conv(x)))


def test_unexportable_op_is_named_with_its_module(tmp_path):
    with pytest.raises(ExportError, match=r"module 'odd' uses aten::kthvalue"):
        export_onnx(_NetWithUnexportableOp().eval(), tmp_path / 'bad.onnx', 1, fp32=True)


def test_float_network_cannot_be_exported_as_int8(tmp_path):
    with pytest.raises(ExportError, match='no fake quantizers'):
        export_onnx(EFM(in_ch=1, width=8, depth=1), tmp_path / 'x.onnx', 1)


def _unsigned_relu_dncnn() -> nn.Module:
    torch.manual_seed(0)
    net = DnCNN(in_ch=1, width=16, depth=5)
    quantize_model(net, QuantConfig(calibration='max', unsigned_relu=True))
    calibrate(net, [_noisy_crop(1, 100 + 20 * i, 60, 48, 48) for i in range(3)], method='max')
    return net.eval()


def test_unsigned_relu_gives_relu_fed_quantizers_the_uint8_grid_and_exports_exactly(tmp_path):
    net = _unsigned_relu_dncnn()
    convs = [m for m in net.modules() if type(m).__name__ == 'QuantConv2d']
    # the first conv sees the (signed) noisy image; every other conv input is a ReLU output
    assert (convs[0].act_quant.qmin, convs[0].act_quant.qmax) == (-128, 127)
    assert all((c.act_quant.qmin, c.act_quant.qmax) == (0, 255) for c in convs[1:])
    path = export_onnx(net, tmp_path / 'u8.onnx', 1, 'onnxruntime')
    assert onnxruntime_kernel_counts(path)['QLinearConv'] == len(convs)
    x = _noisy_crop(1, 30, 40)
    with torch.no_grad():
        expected = net(x).numpy()
    got = _run(path, x)
    out_step = float(net.sub.quant_b.step)
    assert np.abs(got - expected).max() <= 2 * out_step + 1e-6 and _psnr(got, expected) >= 50


def test_unsigned_relu_network_cannot_target_tensorrt(tmp_path):
    with pytest.raises(ExportError, match='unsigned_relu: false'):
        export_onnx(_unsigned_relu_dncnn(), tmp_path / 'x.onnx', 1, 'tensorrt')

