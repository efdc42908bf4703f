"""QDR on basicsr's own archs, as a BasicSR user runs it: their ``network_g`` unchanged, ``model_type: QDRModel``,
a ``quant:`` block and a ``dfd_opt`` without a layer (the default of ``qdr_plugin.archs.basicsr_defaults``).

Per arch (tiny configurations): QDRModel built by basicsr's ``build_model`` -> 1 FP32 iteration, then quantization
and calibration, 3 QAT iterations with DFD and LMR -> save -> reload into a fresh model -> INT8 ONNX for both
targets (``basicsr export``'s own code for ``onnxruntime``) -> ONNX Runtime against the PyTorch fake-quant network.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs import build_network
from basicsr.archs.ecbsr_arch import ECB
from basicsr.data import build_dataset
from basicsr.models import build_model
from conftest import CLI_NO_VNNI
from torch import nn

from qdr_plugin.archs.basicsr_defaults import (
    ReparameterizedECB,
    default_dfd_layer,
    example_input,
    example_size,
)
from qdr_plugin.deploy import ExportError, check_onnx, export_onnx
from qdr_plugin.deploy.export_cli import main as export_main
from qdr_plugin.quant import QuantConfig, QuantConv2d, QuantLinear, is_quantized, quantize_model, set_quant_enabled
from qdr_plugin.utils.checkpoint import load_networks

DEMO_IMAGE = Path(__file__).resolve().parents[1] / 'datasets' / 'demo' / 'val' / '01.png'

# name: (network_g, scale, image channels)
ARCHS = {
    'SwinIR': ({'type': 'SwinIR', 'upscale': 2, 'in_chans': 3, 'img_size': 16, 'window_size': 4, 'img_range': 1.0,
                'depths': [2], 'embed_dim': 12, 'num_heads': [2], 'mlp_ratio': 2,
                'upsampler': 'pixelshuffledirect'}, 2, 3),
    'RCAN': ({'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_group': 1, 'num_block': 1,
              'squeeze_factor': 4, 'upscale': 2}, 2, 3),
    'EDSR': ({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2, 'upscale': 2}, 2, 3),
    'RIDNet': ({'type': 'RIDNet', 'in_channels': 3, 'mid_channels': 16, 'out_channels': 3, 'num_block': 1,
                'img_range': 1.0}, 1, 3),
    'MSRResNet': ({'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2,
                   'upscale': 2}, 2, 3),
    'SRVGGNetCompact': ({'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_conv': 2,
                         'upscale': 2, 'act_type': 'prelu'}, 2, 3),
    'RRDBNet': ({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 2, 'num_feat': 8, 'num_block': 1,
                 'num_grow_ch': 4}, 2, 3),
    'ECBSR': ({'type': 'ECBSR', 'num_in_ch': 1, 'num_out_ch': 1, 'num_block': 1, 'num_channel': 8,
               'with_idt': False, 'act_type': 'prelu', 'scale': 2}, 2, 1),
}

RESIDUAL_ADD_RULE = 'needs Q/DQ on both inputs (residual)'
FLOAT_LAYERS = {'RIDNet': ['add_mean', 'sub_mean']}
"""Layers that stay float by design: RIDNet's MeanShift, a fixed per-channel ``x - mean`` written as a Conv2d
subclass (the other archs write the same mean shift as float tensor ops)."""


def _write_pairs(root: Path, scale: int) -> None:
    """8 colour ground-truth images 48x48 in ``root/gt`` and their bicubic down-scaled inputs in ``root/lq``."""
    (root / 'gt').mkdir(parents=True)
    (root / 'lq').mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    for i in range(8):
        img = np.stack([128 + 60 * np.sin(xx / (3 + i + c)) * np.cos(yy / (4 + i)) for c in range(3)], -1)
        img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(root / 'gt' / f'{i}.png'), img)
        cv2.imwrite(str(root / 'lq' / f'{i}.png'), cv2.resize(img, (48 // scale, 48 // scale),
                                                                  interpolation=cv2.INTER_CUBIC))


def _options(name: str, network_g: dict, scale: int, channels: int, root: Path) -> dict:
    if scale == 1:  # a denoiser: clean images + Gaussian noise
        train = {'type': 'GaussianNoiseDataset', 'dataroot_gt': str(root / 'gt'), 'in_ch': channels, 'sigma': 25,
                 'gt_size': 16}
    else:
        train = {'type': 'PairedImageDataset', 'dataroot_gt': str(root / 'gt'), 'dataroot_lq': str(root / 'lq'),
                 'io_backend': {'type': 'disk'}, 'filename_tmpl': '{}', 'gt_size': 16 * scale}
        if channels == 1:
            train['color'] = 'y'
    train.update({'name': 'train', 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                  'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1})
    return {
        'name': name, 'model_type': 'QDRModel', 'scale': scale, 'num_gpu': 0, 'manual_seed': 0,
        'quant': {'bits': 8, 'calib_batches': 2},
        'datasets': {'train': train},
        'network_g': network_g,
        'path': {'pretrain_network_g': None, 'strict_load_g': True},
        'train': {
            'fp32_warmup_iter': 1, 'total_iter': 4, 'warmup_iter': -1,
            'optim_g': {'type': 'Adam', 'lr': 1e-3},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
            'dfd_opt': {'type': 'L1Loss', 'loss_weight': 1.0},  # no layer: the arch's default
            'lmr_opt': {'type': 'gradnorm'},
        },
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 4, 'use_tb_logger': False},
    }


def _test_input(channels: int, scale: int) -> torch.Tensor:
    """A 24x24 crop of a real image (noisy for a denoiser), ``1 x channels x 24 x 24``."""
    img = cv2.imread(str(DEMO_IMAGE), cv2.IMREAD_GRAYSCALE)[100:124, 60:84] / 255.0
    if scale == 1:
        img = img + np.random.default_rng(0).normal(0, 25 / 255, img.shape)
    return torch.from_numpy(img).float()[None, None].repeat(1, channels, 1, 1)


def _float_layers(net: nn.Module) -> list[str]:
    """Names of the Conv2d / ConvTranspose2d / Linear layers (subclasses too) that have no quantizer."""
    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    return sorted(n for n, m in net.named_modules() if isinstance(m, layers) and not hasattr(m, 'weight_quant'))


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _expected_problem(problem: str, arch: str) -> bool:
    """A TensorRT-rule problem these archs have by design: a float residual add, or a float layer's Conv."""
    return RESIDUAL_ADD_RULE in problem or any(f'/{name}/' in problem for name in FLOAT_LAYERS.get(arch, []))


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_qdr_trains_reloads_and_exports(arch, workdir, parse_yml, onnx_parity):
    network_g, scale, channels = ARCHS[arch]
    _write_pairs(workdir / 'pairs', max(scale, 2))
    yml = workdir / f'{arch}.yml'
    yml.write_text(yaml.safe_dump(_options(arch, network_g, scale, channels, workdir / 'pairs'), sort_keys=False))
    opt = parse_yml(yml, True)
    for folder in ('models', 'training_states'):
        Path(opt['path'][folder]).mkdir(parents=True)
    torch.manual_seed(0)
    model = build_model(opt)
    loader = torch.utils.data.DataLoader(build_dataset(opt['datasets']['train']), batch_size=2)
    assert len(loader) == 4
    for current_iter, batch in enumerate(loader, 1):  # 1 FP32 iteration, then quantize + calibrate, 3 QAT iterations
        model.feed_data(batch)
        model.optimize_parameters(current_iter)
        assert all(np.isfinite(v) for v in model.log_dict.values())
    net = model.net_g
    assert is_quantized(net) and 'l_dfd' in model.log_dict
    layer = default_dfd_layer(net)  # from DFD_LAYERS, also for a point form (PointRRDBNet) of the arch
    assert layer is not None and model._distill_layers() == [layer]
    assert _float_layers(net) == FLOAT_LAYERS.get(arch, [])
    assert any(isinstance(m, (QuantConv2d, QuantLinear)) for m in net.modules())
    if arch == 'SwinIR':  # the attention's and the MLP's Linear layers work on (windows, tokens, channels)
        assert sum(isinstance(m, QuantLinear) for m in net.modules()) == 4 * 2
        # validation images need not be a multiple of the window: test() pads and crops, as SwinIRModel does
        model.feed_data({'lq': torch.rand(1, channels, 10, 13)})
        model.test()
        assert model.output.shape == (1, channels, 10 * scale, 13 * scale) and model.lq.shape[-2:] == (10, 13)
    if arch == 'ECBSR':  # the student is the re-parameterized (deploy) form, the teacher still the ECBSR
        assert not any(isinstance(m, ECB) for m in net.modules())
        assert any(isinstance(m, ReparameterizedECB) for m in net.modules())
        assert any(isinstance(m, ECB) for m in model.net_t.modules())
    model.save(0, 4)

    ckpt = Path(opt['path']['models']) / 'net_g_4.pth'
    test_options = _options(arch, network_g, scale, channels, workdir / 'pairs')
    test_options['path']['pretrain_network_g'] = str(ckpt.resolve())
    test_yml = workdir / f'{arch}_test.yml'
    test_yml.write_text(yaml.safe_dump(test_options, sort_keys=False))
    reloaded = build_model(parse_yml(test_yml, False)).net_g.eval()
    _assert_same_state(net, reloaded)
    student, teacher = load_networks(network_g, test_options['quant'], str(ckpt))  # what the deploy tools load
    _assert_same_state(net, student)
    _assert_same_state(model.net_t, teacher)

    x = _test_input(channels, scale)
    export_main(['-opt', str(test_yml), '--ckpt', str(ckpt), '--out', str(workdir / f'{arch}_onnxruntime.onnx'),
                 *CLI_NO_VNNI])
    export_onnx(reloaded, workdir / f'{arch}_tensorrt.onnx', channels, 'tensorrt')
    for target in ('onnxruntime', 'tensorrt'):
        path = workdir / f'{arch}_{target}.onnx'
        report = check_onnx(path, target)
        # basicsr's residual additions are python `+` and stay float: the TensorRT rule they miss
        assert all(_expected_problem(p, arch) for p in report.problems), report.summary()
        assert report.op_counts['QuantizeLinear'] > 0
        max_abs, psnr = onnx_parity(path, reloaded, x)
        # the outputs are not quantized (the last layer is a float conv or a float add): the step is the 8-bit one
        assert max_abs <= 2 / 255 and psnr >= 50, (target, max_abs, psnr)


def test_ecbsr_reparameterization_keeps_the_function():
    """quantize_model turns every ECB into one plain conv (+ activation) that computes what the ECB computes."""
    torch.manual_seed(0)
    network_g = dict(ARCHS['ECBSR'][0], with_idt=True)
    net = build_network(network_g)
    for module in net.modules():  # non-trivial edge-filter branches (their scales start near 0)
        if isinstance(getattr(module, 'scale', None), nn.Parameter):
            nn.init.normal_(module.scale, std=0.5)
    x = torch.rand(2, 1, 20, 20)
    with torch.no_grad():
        multi_branch = net.train()(x)  # training form: conv3x3 + 4 SeqConv3x3 branches + identity
        quantize_model(net, QuantConfig(), example_input(net, network_g))
        set_quant_enabled(net, False)
        plain = net.eval()(x)
    assert sum(isinstance(m, ReparameterizedECB) for m in net.modules()) == 3
    assert _float_layers(net) == []
    assert torch.allclose(plain, multi_branch, atol=1e-5)


class _KthValue(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - torch.kthvalue(x, 1, 1, True)[0]


@pytest.mark.parametrize('arch', sorted(ARCHS))
def test_unexportable_op_is_named_with_its_module(arch, tmp_path):
    """The exporter's diagnosis names the module of an op with no ONNX form, inside each of these archs."""
    network_g, _, channels = ARCHS[arch]
    net = build_network(dict(network_g)).eval()
    layer = default_dfd_layer(net)
    parent, _, child = layer.rpartition('.')
    holder = net.get_submodule(parent) if parent else net
    setattr(holder, child, nn.Sequential(getattr(holder, child), _KthValue()))
    with pytest.raises(ExportError, match=rf"module '{re.escape(layer)}\.1' uses aten::kthvalue"):
        export_onnx(net, tmp_path / 'bad.onnx', channels, fp32=True)


def test_swinir_example_avoids_the_built_for_size():
    """At its build-time size SwinIR uses a stored attention mask, which would freeze an exported graph's size."""
    network_g = dict(ARCHS['SwinIR'][0], img_size=64)
    assert example_size(build_network(network_g)) == 68
    assert example_size(build_network(dict(network_g, window_size=7, img_size=21))) == 70
