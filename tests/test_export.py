"""INT8 ONNX export: real files run by real ONNX Runtime, parity with the fake-quant network, the checker."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from basicsr.archs.srresnet_arch import MSRResNet
from conftest import NO_VNNI, run_onnx
from torch import nn

from qdr_plugin.archs import EFM, DnCNN
from qdr_plugin.cli import main as cli_main
from qdr_plugin.deploy import ExportError, check_onnx, export_onnx, onnx_export, onnxruntime_kernel_counts
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import QuantConfig, calibrate, quantize_model

REPO = Path(__file__).resolve().parents[1]
DEMO_IMAGE = REPO / 'datasets' / 'demo' / 'val' / '01.png'


def _load_tool(name: str):
    """A script of ``tools/`` as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _noisy_crop(channels: int, top: int, left: int, height: int = 37, width: int = 53) -> torch.Tensor:
    """A crop of a real (demo) image with sigma-25 noise: the activations look like a denoiser's."""
    img = cv2.imread(str(DEMO_IMAGE), cv2.IMREAD_GRAYSCALE)[top : top + height, left : left + width] / 255.0
    noisy = img + np.random.default_rng(top).normal(0, 25 / 255, img.shape)
    return torch.from_numpy(noisy).float()[None, None].repeat(1, channels, 1, 1)


def _quantized(net: nn.Module, channels: int, seed: int = 0, unsigned_relu: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    quantize_model(net, QuantConfig(calibration='max', unsigned_relu=unsigned_relu))
    calibrate(net, [_noisy_crop(channels, 100 + 20 * i, 60, 48, 48) for i in range(3)], method='max')
    return net.eval()


def _run(path, x: torch.Tensor) -> np.ndarray:
    return run_onnx(path, x)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


NETWORKS = {
    'efm_gray': (lambda: EFM(in_ch=1, width=16, depth=2), 1, 1),
    'basicsr_msrresnet_x2': (lambda: MSRResNet(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=2), 3, 2),
}
# the TensorRT rule "Q/DQ on both inputs of a residual add" on basicsr's archs: tests/test_int_kernels.py
CASES = [(n, t) for n in sorted(NETWORKS) for t in ('onnxruntime', 'tensorrt') if t == 'onnxruntime' or 'efm' in n]


@pytest.mark.parametrize(('name', 'target'), CASES)
def test_int8_export_matches_fake_quant_network(name, target, tmp_path):
    build, channels, scale = NETWORKS[name]
    torch.manual_seed(0)  # the weights do not depend on the tests that ran before
    # docs/deployment.md: the bound holds for the onnxruntime form of a network trained with unsigned_relu: true
    net = _quantized(build(), channels, unsigned_relu=target == 'onnxruntime')
    path = export_onnx(net, tmp_path / f'{name}.onnx', channels, target, no_vnni=NO_VNNI and target == 'onnxruntime')
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
    path = export_onnx(net, tmp_path / 'rgb.onnx', 3, target, no_vnni=NO_VNNI and target == 'onnxruntime')
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
    n_deconv = sum(type(m).__name__ == 'QuantConvTranspose2d' for m in net.modules())
    # every convolution but the 2x2 transposed convolutions (ONNX Runtime has no integer ConvTranspose) is a
    # QLinearConv, the one-channel LDG gate projections too (their output quantizer feeds the float sigmoid)
    assert n_deconv == 2 and kernels['ConvTranspose'] == n_deconv
    assert kernels['QLinearConv'] == n_conv - n_deconv
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
    path = export_onnx(net, tmp_path / 'u8.onnx', 1, 'onnxruntime', no_vnni=NO_VNNI)
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



def _qat_checkpoint(write_options, bits: int, **quant) -> tuple[Path, Path, nn.Module]:
    """``(options, checkpoint, network)`` of a tiny QAT EFM at ``bits`` bits (and the other ``quant`` options), as
    ``basicsr train`` saves it."""
    network_g = {'type': 'EFM', 'in_ch': 1, 'width': 4, 'depth': 1}
    quant = {'bits': bits, 'calibration': 'max', **quant}
    options = write_options(f'qat{bits}', network_g=network_g, quant=quant)
    torch.manual_seed(0)
    net = EFM(in_ch=1, width=4, depth=1)
    prepare(net, network_g, QuantConfig.from_options(quant),
            [_noisy_crop(1, 100 + 20 * i, 60, 32, 32) for i in range(2)])
    checkpoint = options.with_suffix('.pth')
    torch.save({'params': net.state_dict()}, checkpoint)
    return options, checkpoint, net.eval()


@pytest.mark.parametrize('target', ['onnxruntime', 'tensorrt'])
def test_a_12_bit_network_is_refused_at_export_naming_quant_bits(write_options, capsys, target):
    options, checkpoint, _ = _qat_checkpoint(write_options, 12)
    out = options.with_name('qat12.onnx')
    with pytest.raises(SystemExit) as exit_info:
        cli_main(['export', '-opt', str(options), '--ckpt', str(checkpoint), '--out', str(out), '--target', target])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 2 and line.startswith('basicsr export: quantizer '), line
    assert 'is 12-bit' in line and 'quant.bits = 12' in line and 'quant.bits <= 8' in line and '--fp32' in line
    assert not out.exists()


def _wrapped_12_bit_export(net: nn.Module, path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What the export wrote for a 12-bit network before it refused one: integers wrapped into int8 / uint8."""
    monkeypatch.setattr(onnx_export, '_refuse_wide_quantizers', lambda net: None)
    return export_onnx(net, path, 1, 'onnxruntime')


def test_checker_names_stored_weights_that_disagree_with_the_network(write_options, monkeypatch, capsys):
    options, checkpoint, net = _qat_checkpoint(write_options, 12)
    wrapped = _wrapped_12_bit_export(net, options.with_name('wrapped.onnx'), monkeypatch)
    assert not check_onnx(wrapped, 'onnxruntime').problems  # the file alone looks valid ...
    report = check_onnx(wrapped, 'onnxruntime', net)  # ... its integers are not the network's
    assert any(re.match(r"weights of 'tail': \d+ of 144 stored integers differ from the network's", p)
               for p in report.problems), report.summary()
    with pytest.raises(SystemExit) as exit_info:  # the tool, given the checkpoint, says so too
        _load_tool('check_onnx_int8').main([str(wrapped), '-opt', str(options), '--ckpt', str(checkpoint)])
    assert exit_info.value.code == 1
    assert "- weights of 'tail': " in capsys.readouterr().out

    # a hand-edited 8-bit export: one stored weight changed
    options, checkpoint, net = _qat_checkpoint(write_options, 8)
    path = export_onnx(net, options.with_name('q8.onnx'), 1, 'onnxruntime')
    assert not check_onnx(path, 'onnxruntime', net).problems
    model = onnx.load(str(path))
    weight = next(i for i in model.graph.initializer
                  if i.name.startswith('/tail/') and i.data_type == onnx.TensorProto.INT8)
    values = onnx.numpy_helper.to_array(weight).copy()
    values.flat[0] = -values.flat[0] if values.flat[0] else 5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(path))
    report = check_onnx(path, 'onnxruntime', net)
    assert len(report.problems) == 1, report.summary()
    assert re.match(r"weights of 'tail': 1 of 144 stored integers differ from the network's \(by up to \d+; a value "
                    'too wide for the stored integer type wraps around\\): export the checkpoint again with basicsr '
                    'export \\(it refuses quantizers wider than 8 bits\\)$', report.problems[0]), report.problems[0]


def test_checker_names_a_quantized_constant_that_does_not_fit_its_integer_type(tmp_path):
    """A weight quantized in the graph (QuantizeLinear of a float constant) with a scale too small for int8."""
    weight = np.linspace(-1, 1, 2 * 1 * 3 * 3, dtype=np.float32).reshape(2, 1, 3, 3)
    nodes = [
        onnx.helper.make_node('QuantizeLinear', ['input', 'act_scale', 'act_zero'], ['xq'], name='act_q'),
        onnx.helper.make_node('DequantizeLinear', ['xq', 'act_scale', 'act_zero'], ['x'], name='act_dq'),
        onnx.helper.make_node('QuantizeLinear', ['w', 'w_scale', 'w_zero'], ['wq'], name='weight_q', axis=0),
        onnx.helper.make_node('DequantizeLinear', ['wq', 'w_scale', 'w_zero'], ['wf'], name='weight_dq', axis=0),
        onnx.helper.make_node('Conv', ['x', 'wf'], ['y'], pads=[1, 1, 1, 1]),
        onnx.helper.make_node('ReduceMean', ['y'], ['output'], axes=[1], keepdims=1),
    ]
    constants = {'act_scale': np.float32(1 / 255), 'act_zero': np.uint8(0), 'w': weight,
                 'w_scale': np.array([1 / 127, 1 / 1000], np.float32), 'w_zero': np.zeros(2, np.int8)}
    dims = ['N', 1, 'H', 'W']
    graph = onnx.helper.make_graph(
        nodes, 'g', [onnx.helper.make_tensor_value_info('input', onnx.TensorProto.FLOAT, dims)],
        [onnx.helper.make_tensor_value_info('output', onnx.TensorProto.FLOAT, dims)],
        [onnx.numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    path = tmp_path / 'saturating.onnx'
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid('', 17)], ir_version=8), path)
    report = check_onnx(path)
    assert report.problems == [
        'QuantizeLinear (weight_q) of the constant w: 8 of 18 values do not fit int8 [-128, 127] (round(x / scale) + '
        'zero point reaches -127 .. 1000); they saturate: the scale is too small for the integer type'
    ], report.summary()


def test_ort_rewrite_parity_compares_each_optimisation_setting_with_the_fake_quant_network(write_options, tmp_path,
                                                                                            monkeypatch, one_thread):
    """``benchmarks/ort_rewrite_parity.py`` runs a QDR checkpoint's export under every graph-optimisation setting.
    Without optimisation ONNX Runtime computes the Q/DQ graph in float: with ``unsigned_relu: true`` (the ReLU-fed
    quantizers keep their trained grid in the file) it matches the fake-quant network; 7-bit weights keep the integer
    kernels exact on CPUs without VNNI."""
    options, checkpoint, _ = _qat_checkpoint(write_options, 8, unsigned_relu=True, weight_bits=7)  # exact on any CPU
    spec = importlib.util.spec_from_file_location('ort_rewrite_parity', REPO / 'benchmarks' / 'ort_rewrite_parity.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr('sys.argv', ['ort_rewrite_parity.py', '-opt', str(options), '--ckpt', str(checkpoint),
                                     '--crop', '24', '--name', 'parity', '--out', str(tmp_path)])
    module.main()
    rows = {r['setting']: r for r in json.loads((tmp_path / 'parity.json').read_text())['rows']}
    assert list(rows) == ['off', 'basic', 'extended', 'all', 'all but QDQSelectorActionTransformer']
    assert rows['off']['max_steps'] <= 0.01  # the same float arithmetic
    assert all(r['psnr_db'] >= 50 and r['max_steps'] <= 2 for r in rows.values())  # the bound of deployment.md
