"""What the published restorers need from the quantization engine: layers called once per recurrent stage, dead and
subnormal weight channels, float layers in a TensorRT file, and QDR from a bare published state dict through
``basicsr train`` / ``basicsr export`` with the teacher's output as the reconstruction target."""

from __future__ import annotations

import copy
from pathlib import Path

import onnx
import pytest
import torch
from conftest import NO_VNNI, refusal
from onnx import numpy_helper
from torch import nn

from qdr_plugin.archs import IAT, AODNet, DnCNN, PReNet
from qdr_plugin.cli import main
from qdr_plugin.deploy import check_onnx, export_onnx
from qdr_plugin.quant import Add, CallSiteActQuantizer, QuantConfig, calibrate, quantize_model
from qdr_plugin.quant.fake_quant import WeightQuantizer


class Recurrent(nn.Module):
    """One convolution and one residual add applied three times; each stage adds to the signal, so the stages'
    input ranges differ."""

    in_ch = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.add = Add()
        self.stages = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.stages):
            x = self.add(x, 2 * torch.tanh(self.conv(x)))
        return x


def _quantized_recurrent() -> Recurrent:
    torch.manual_seed(0)
    net = quantize_model(Recurrent(), QuantConfig(calibration='max'))
    calibrate(net, [torch.rand(2, 3, 16, 16)], method='max')
    return net.eval()


def _quantize_scales(path: Path) -> list[float]:
    """The scale of every QuantizeLinear in the file, in graph order."""
    graph = onnx.load(str(path)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == 'Constant'})
    return [float(values[n.input[1]]) for n in graph.node if n.op_type == 'QuantizeLinear']


def test_a_layer_called_per_stage_gets_one_activation_quantizer_per_call():
    net = _quantized_recurrent()
    sites = net.conv.act_quant
    assert isinstance(sites, CallSiteActQuantizer) and len(sites.sites) == 3
    assert isinstance(net.add.quant_b, CallSiteActQuantizer) and len(net.add.quant_b.sites) == 3
    assert isinstance(net.conv.weight_quant, WeightQuantizer)  # one weight quantizer for all calls
    steps = [float(q.step) for q in sites.sites]
    assert steps[0] < steps[1] < steps[2]  # each call calibrated on its own input
    keys = set(net.state_dict())
    assert {f'conv.act_quant.sites.{k}.step' for k in range(3)} <= keys and 'conv.weight_quant.step' in keys
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        first = net(x)
        assert torch.equal(net(x), first)  # the count restarts at every forward pass
        assert torch.equal(copy.deepcopy(net)(x), first)  # a copy keeps its own count

    reloaded = quantize_model(Recurrent(), QuantConfig())
    reloaded.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(x), first)


def test_each_call_site_is_its_own_quantize_node_in_the_export(tmp_path, onnx_parity):
    net = _quantized_recurrent()
    for target in ('onnxruntime', 'tensorrt'):
        path = export_onnx(net, tmp_path / f'{target}.onnx', 3, target)
        assert check_onnx(path, target, net).problems == []
        scales = _quantize_scales(path)
        assert all(any(s == pytest.approx(float(q.step), rel=1e-6) for s in scales) for q in net.conv.act_quant.sites)
        _, psnr = onnx_parity(path, net, torch.rand(1, 3, 20, 24))
        assert psnr > 50


def test_a_layer_called_more_often_than_at_quantization_is_refused_by_name():
    net = _quantized_recurrent()
    net.stages = 4
    with pytest.raises(RuntimeError, match='quantized for 3 calls per forward pass'):
        net(torch.rand(1, 3, 8, 8))


def test_dead_and_subnormal_weight_channels_get_a_usable_step(tmp_path):
    conv = nn.Conv2d(3, 4, 3, padding=1)
    with torch.no_grad():
        conv.weight[1] = 0.0
        conv.weight[2] = 3e-8  # below any 8-bit step of the layer
        conv.weight[3] = 1e-40  # subnormal
    quantizer = WeightQuantizer(8, 4)
    quantizer.init_from_weight(conv.weight)
    live = conv.weight[0].abs().max() / 127
    assert torch.allclose(quantizer.step[1:], live.expand(3))
    net = quantize_model(nn.Sequential(conv, nn.ReLU(), nn.Conv2d(4, 3, 1)), QuantConfig(), torch.rand(1, 3, 8, 8))
    calibrate(net, [torch.rand(2, 3, 8, 8)])
    path = export_onnx(net, tmp_path / 'dead.onnx', 3)
    assert check_onnx(path, 'onnxruntime', net).problems == []


def test_published_subnormal_weights_load_as_zero():
    net = AODNet()
    state = net.state_dict()
    state['e_conv2.weight'][0, 0, 0, 0] = 5.5e-41
    state['e_conv2.weight'][0, 0, 0, 1] = 0.25
    net.load_state_dict(state)
    assert net.e_conv2.weight[0, 0, 0, 0] == 0 and net.e_conv2.weight[0, 0, 0, 1] == 0.25


def test_tensorrt_file_may_keep_layers_in_float(tmp_path):
    net = DnCNN(in_ch=3, out_ch=3, width=8, depth=4)
    quantize_model(net, QuantConfig(keep_fp32=['dncnn.0']))
    calibrate(net, [torch.rand(2, 3, 16, 16)])
    path = export_onnx(net, tmp_path / 'trt.onnx', 3, 'tensorrt')
    assert check_onnx(path, 'tensorrt', net).problems == []


def test_iat_with_float_global_branch_exports_for_both_targets(tmp_path, onnx_parity):
    torch.manual_seed(0)
    net = IAT(dim=8, global_dim=16, num_heads=2, num_blocks=1)
    quantize_model(net, QuantConfig(keep_fp32=['global_net.*']))
    calibrate(net, [torch.rand(2, 3, 32, 32)])
    assert not any('global_net' in name and 'quant' in name for name, _ in net.named_modules())
    for target in ('onnxruntime', 'tensorrt'):
        path = export_onnx(net, tmp_path / f'{target}.onnx', 3, target, no_vnni=NO_VNNI and target == 'onnxruntime')
        assert check_onnx(path, target, net).problems == []
        _, psnr = onnx_parity(path, net, torch.rand(1, 3, 32, 40))
        assert psnr > 50


PRENET = {'type': 'PReNet', 'stages': 2, 'width': 4, 'blocks': 1}


def _prenet_options(write_options, delete_key, published: Path, **train):
    colour = {'in_ch': 3}
    return write_options(
        'prenet', network_g={**PRENET, 'in_ch': delete_key, 'depth': delete_key},
        datasets={'train': colour, 'val': colour},
        path={'pretrain_network_g': str(published), 'param_key_g': None},
        train={'fp32_warmup_iter': 0, 'pixel_target': 'teacher', **train},
    )


def test_qdr_from_a_bare_published_state_dict_trains_and_exports(write_options, delete_key, workdir):
    torch.manual_seed(0)
    published = workdir / 'prenet_published.pth'
    torch.save(PReNet(stages=2, width=4, blocks=1).state_dict(), published)  # a bare state dict, as published
    yml = _prenet_options(write_options, delete_key, published)
    main(['train', '-opt', str(yml)])
    checkpoint = torch.load('experiments/prenet/models/net_g_latest.pth', weights_only=True)
    assert 'conv0.0.act_quant.sites.1.step' in checkpoint['params']  # the second stage's own quantizer
    original = torch.load(published, weights_only=True)
    assert all(torch.equal(original[k], checkpoint['params_teacher'][k]) for k in original)  # frozen teacher
    for target in ('onnxruntime', 'tensorrt'):
        main(['export', '-opt', str(yml), '--ckpt', 'experiments/prenet/models/net_g_latest.pth', '--target', target,
              '--out', f'prenet_{target}.onnx'])
    main(['export', '-opt', str(yml), '--ckpt', str(published), '--fp32', '--out', 'prenet_fp32.onnx'])
    assert Path('prenet_fp32.onnx').is_file()


def test_pixel_target_typo_is_refused_before_training(write_options, delete_key, workdir, capsys):
    published = workdir / 'prenet_published.pth'
    torch.save(PReNet(stages=2, width=4, blocks=1).state_dict(), published)
    yml = _prenet_options(write_options, delete_key, published, pixel_target='techer')
    message = refusal(['train', '-opt', str(yml)], capsys)
    assert 'train.pixel_target' in message and 'gt or teacher' in message
