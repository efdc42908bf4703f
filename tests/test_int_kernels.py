"""Every convolution of basicsr's archs, the EFM and DnCNN runs as an integer kernel in ONNX Runtime (QLinearConv),
the INT8 file agrees with the fake-quant network within the bound of docs/deployment.md, the same network passes
the TensorRT checker for the tensorrt target, and the per-file kernel report names what stays float."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from conftest import NO_VNNI

from qdr_plugin.deploy import check_onnx, export_onnx
from qdr_plugin.deploy.export_cli import print_kernel_report
from qdr_plugin.deploy.kernel_report import kernel_report
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import ActQuantizer, QuantConfig
from qdr_plugin.utils.checkpoint import build_network, load_networks

ARCHS = {
    'EDSR': {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2, 'upscale': 2},
    'SRVGGNetCompact': {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_conv': 2,
                        'upscale': 2, 'act_type': 'prelu'},
    'RCAN': {'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_group': 1, 'num_block': 1,
             'squeeze_factor': 4, 'upscale': 2},
    'MSRResNet': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2},
    'RRDBNet': {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 2, 'num_feat': 8, 'num_block': 1,
                'num_grow_ch': 4},
    'EFM': {'type': 'EFM', 'in_ch': 1, 'width': 8, 'depth': 1, 'enc_blocks': 1, 'dec_blocks': 1, 'mid_blocks': 1},
    'DnCNN': {'type': 'DnCNN', 'in_ch': 1, 'depth': 4, 'width': 8},
}
PARITY_STEPS = 2  # docs/deployment.md: within 2 output quantization steps and at >= 50 dB
PARITY_DB = 50.0


def _channels(network_opt: dict) -> int:
    return int(network_opt.get('num_in_ch') or network_opt.get('in_ch'))


def _prepared(network_opt: dict, **quant) -> torch.nn.Module:
    torch.manual_seed(0)
    channels = _channels(network_opt)
    batches = [torch.rand(2, channels, 24, 24) for _ in range(2)]
    return prepare(build_network(dict(network_opt)), network_opt, QuantConfig(**quant), batches).network.eval()


def _output_step(net: torch.nn.Module, x: torch.Tensor) -> float:
    """The larger step of the last two activation quantizers a forward pass calls (the output's quantizer, and for
    a global residual the other operand's)."""
    order: list[ActQuantizer] = []
    hooks = [m.register_forward_hook(lambda module, i, o: order.append(module))
             for m in net.modules() if isinstance(m, ActQuantizer)]
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    last = list(dict.fromkeys(reversed(order)))[:2]
    return max(float(q.step) for q in last)


@pytest.mark.parametrize('arch', list(ARCHS))
def test_every_convolution_runs_as_an_integer_kernel(arch, tmp_path, onnx_parity):
    network_opt = ARCHS[arch]
    net = _prepared(network_opt)
    channels = _channels(network_opt)
    path = export_onnx(net, tmp_path / 'ort.onnx', channels, 'onnxruntime', no_vnni=NO_VNNI)
    report = kernel_report(path)
    convs = sum(node.op_type == 'Conv' for node in onnx.load(str(path)).graph.node)
    assert report.integer_convs == convs
    assert all(op == 'ConvTranspose' for _, op in report.float_convs)  # ONNX Runtime has no integer ConvTranspose
    x = torch.rand(1, channels, 20, 20)
    max_abs, psnr = onnx_parity(path, net, x)
    assert max_abs <= PARITY_STEPS * _output_step(net, x) + 1e-6
    assert psnr >= PARITY_DB
    trt = export_onnx(net, tmp_path / 'trt.onnx', channels, 'tensorrt')
    assert check_onnx(trt, 'tensorrt', net).problems == []
    max_abs, psnr = onnx_parity(trt, net, x)
    assert max_abs <= PARITY_STEPS * _output_step(net, x) + 1e-6 and psnr >= PARITY_DB


def test_integer_elementwise_ops_of_rcan_and_msrresnet(tmp_path):
    """RCAN's residual adds and channel attention, MSRResNet's adds and LeakyReLUs run as ONNX Runtime integer ops."""
    rcan = kernel_report(export_onnx(_prepared(ARCHS['RCAN']), tmp_path / 'rcan.onnx', 3, 'onnxruntime'))
    assert {'QLinearAdd', 'QLinearMul', 'QLinearSigmoid', 'QLinearGlobalAveragePool'} <= set(rcan.integer_ops)
    srres = kernel_report(export_onnx(_prepared(ARCHS['MSRResNet']), tmp_path / 'srres.onnx', 3, 'onnxruntime'))
    assert {'QLinearAdd', 'QLinearLeakyRelu'} <= set(srres.integer_ops)
    assert 'LeakyRelu' not in srres.float_ops


def test_integer_concatenations_of_rrdbnet(tmp_path):
    """RRDBNet's dense blocks run their LeakyReLUs and concatenations as ONNX Runtime integer ops, as its PTQ does,
    and its nearest up-samplings copy 8-bit tensors."""
    rrdb = kernel_report(export_onnx(_prepared(ARCHS['RRDBNet']), tmp_path / 'rrdb.onnx', 3, 'onnxruntime'))
    assert {'QLinearConcat', 'QLinearLeakyRelu', 'QLinearAdd'} <= set(rrdb.integer_ops)
    assert rrdb.integer_ops['QLinearLeakyRelu'] == 4 * 1 * 3 + 3  # 4 per dense block, 3 dense blocks; 3 at the end
    assert not {'Concat', 'LeakyRelu', 'Resize'} & set(rrdb.float_ops)
    assert rrdb.data_ops['Resize'] == 2  # RRDBNet always up-samples twice (scale 2 after a pixel unshuffle)


def test_report_names_the_float_convolutions(tmp_path, capsys):
    """Without the integer-kernel points, the report counts EDSR's float convolutions and names them."""
    net = _prepared(ARCHS['EDSR'], integer_points=False)
    path = export_onnx(net, tmp_path / 'old.onnx', 3, 'onnxruntime')
    report = kernel_report(path)
    assert report.float_convs and report.integer_convs + len(report.float_convs) == report.convs
    print_kernel_report(path, profile=True)
    text = capsys.readouterr().out
    assert f'runs {report.integer_convs} of {report.convs} convolutions as integer kernels' in text
    assert f'{len(report.float_convs)} in float' in text
    assert report.float_convs[0][0] in text  # the node name
    assert 'top float op types by share of kernel time: ' in text
    top = text.split('top float op types by share of kernel time: ')[1].splitlines()[0]
    assert top.split()[0] in {*report.float_ops, 'Conv', 'FusedConv', 'QuantizeLinear', 'DequantizeLinear',
                              *report.data_ops}


def test_checkpoint_without_the_points_loads_as_trained(tmp_path):
    """A QDR checkpoint saved before ``quant.integer_points`` existed loads with today's options as the network it
    was (inputs-only quantization), and computes what it computed."""
    network_opt = ARCHS['EDSR']
    old = _prepared(network_opt, integer_points=False)
    path = Path(tmp_path / 'old.pth')
    torch.save({'params': old.state_dict()}, path)
    loaded, _ = load_networks(network_opt, {'bits': 8}, str(path))
    assert not any(name.endswith('out_quant') for name, m in loaded.named_modules() if m is not None)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), old(x))
    new = _prepared(network_opt)
    torch.save({'params': new.state_dict()}, path)
    loaded, _ = load_networks(network_opt, {'bits': 8}, str(path))
    with torch.no_grad():
        assert torch.equal(loaded(x), new(x))


def test_integer_points_follow_the_activation_bits() -> None:
    """``integer_points: ~`` adds the points with 8-bit activations only: integer kernels are 8-bit, and below 8 bits
    the extra points would only coarsen gate and residual tensors."""
    from qdr_plugin.quant import QuantConfig

    assert QuantConfig().integer_kernel_points
    assert not QuantConfig(weight_bits=4, act_bits=4).integer_kernel_points
    assert QuantConfig(weight_bits=4, act_bits=8).integer_kernel_points
    assert QuantConfig(weight_bits=4, act_bits=4, integer_points=True).integer_kernel_points
    assert not QuantConfig(integer_points=False).integer_kernel_points
