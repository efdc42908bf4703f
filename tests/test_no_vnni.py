"""INT8 files for x86 CPUs without VNNI: uint8 weights where int8 ones saturate, exact on every CPU."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
import torch
from conftest import refusal, run_onnx
from test_export import _noisy_crop, _qat_checkpoint

from qdr_plugin.archs import EFM
from qdr_plugin.deploy import ExportError, check_onnx, export_onnx, no_vnni, onnxruntime_kernel_counts
from qdr_plugin.deploy import infer as infer_module
from qdr_plugin.deploy.graph_rewrites import constant_values
from qdr_plugin.quant import QuantConfig, calibrate, quantize_model

AVX2_ONLY = 'processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 avx avx2 fma\n'
AVX512_VNNI = 'processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 avx avx2 avx512f avx512_vnni\n'
AVX_VNNI = 'processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 avx avx2 avx_vnni\n'
ARM = 'processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp\n'


def test_cpus_whose_integer_kernels_saturate_are_the_x86_ones_without_vnni():
    assert no_vnni.int8_weights_saturate(AVX2_ONLY)
    assert not no_vnni.int8_weights_saturate(AVX512_VNNI)
    assert not no_vnni.int8_weights_saturate(AVX_VNNI)
    assert not no_vnni.int8_weights_saturate(ARM)


def _efm(weight_bits: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    net = EFM(in_ch=1, width=16, depth=2)
    quantize_model(net, QuantConfig(calibration='max', unsigned_relu=True, weight_bits=weight_bits))
    calibrate(net, [_noisy_crop(1, 100 + 20 * i, 60, 48, 48) for i in range(3)], method='max')
    return net.eval()


def _weight_types(path) -> list[str]:
    """The integer type of every constant a Conv's weight DequantizeLinear reads (float convs have none)."""
    graph = onnx.load(str(path)).graph
    values = constant_values(graph)
    producers = {out: node for node in graph.node for out in node.output}
    weight_dqs = [producers.get(node.input[1]) for node in graph.node if node.op_type == 'Conv']
    return [str(values[dq.input[0]].dtype) for dq in weight_dqs if dq is not None and dq.op_type == 'DequantizeLinear']


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _assert_parity(path, net: torch.nn.Module) -> None:
    """The file's ONNX Runtime output within the parity bound of docs/deployment.md of the fake-quant network's."""
    x = _noisy_crop(1, 30, 40)
    with torch.no_grad():
        expected = net(x).numpy()
    got = run_onnx(path, x)
    step = max(float(net.residual.quant_a.step), float(net.residual.quant_b.step))
    assert np.abs(got - expected).max() <= 2 * step + 1e-6 and _psnr(got, expected) >= 50


def test_no_vnni_file_stores_wide_weights_as_uint8_and_computes_the_trained_numbers_on_any_cpu(tmp_path):
    net = _efm()
    default = export_onnx(net, tmp_path / 'int8.onnx', 1, 'onnxruntime')
    path = export_onnx(net, tmp_path / 'no_vnni.onnx', 1, 'onnxruntime', no_vnni=True)
    types = _weight_types(path)
    wide = no_vnni.saturating_weight_count(onnx.load(str(default)))
    assert wide > 0 and types.count('uint8') == wide and set(types) <= {'uint8', 'int8'}
    assert no_vnni.saturating_weight_count(onnx.load(str(path))) == 0
    # the same integers with zero point 128: the checker finds the network's weights in the file
    assert check_onnx(path, 'onnxruntime', net).problems == []
    # still integer kernels: the uint8 x uint8 QLinearConv
    assert onnxruntime_kernel_counts(path)['QLinearConv'] == onnxruntime_kernel_counts(default)['QLinearConv'] > 0
    _assert_parity(path, net)


def test_seven_bit_weights_need_no_uint8_and_are_exact_in_the_default_file(tmp_path):
    net = _efm(weight_bits=7)
    path = export_onnx(net, tmp_path / 'w7.onnx', 1, 'onnxruntime')
    assert no_vnni.saturating_weight_count(onnx.load(str(path))) == 0
    assert set(_weight_types(path)) == {'int8'}
    same = export_onnx(net, tmp_path / 'w7_no_vnni.onnx', 1, 'onnxruntime', no_vnni=True)
    assert set(_weight_types(same)) == {'int8'}  # nothing to change
    _assert_parity(path, net)


def test_no_vnni_is_refused_for_tensorrt_and_fp32(tmp_path):
    net = _efm()
    with pytest.raises(ExportError, match='--target onnxruntime'):
        export_onnx(net, tmp_path / 'trt.onnx', 1, 'tensorrt', no_vnni=True)
    with pytest.raises(ExportError, match='FP32 export'):
        export_onnx(net, tmp_path / 'fp32.onnx', 1, fp32=True, no_vnni=True)
    assert not list(tmp_path.iterdir())


def test_export_refuses_no_vnni_with_int4(write_options, capsys):
    options, checkpoint, _ = _qat_checkpoint(write_options, 8)
    out = options.with_name('x.onnx')
    line = refusal(['export', '-opt', str(options), '--ckpt', str(checkpoint), '--out', str(out), '--no-vnni',
                    '--int4'], capsys)
    assert '--no-vnni' in line and '--int4' in line
    assert not out.exists()


def test_running_a_saturating_file_on_a_cpu_without_vnni_warns_with_the_fix(tmp_path, monkeypatch):
    net = _efm()
    default = export_onnx(net, tmp_path / 'int8.onnx', 1, 'onnxruntime')
    fixed = export_onnx(net, tmp_path / 'no_vnni.onnx', 1, 'onnxruntime', no_vnni=True)
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text(AVX2_ONLY)
    monkeypatch.setattr(no_vnni, 'CPUINFO', cpuinfo)  # the CPU: AVX2, no VNNI
    monkeypatch.setattr(no_vnni.platform, 'machine', lambda: 'x86_64')
    with pytest.warns(UserWarning, match=r'no VNNI.*weight_bits: 7.*--no-vnni'):
        infer_module.onnx_restorer(default, threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        infer_module.onnx_restorer(fixed, threads=1)
