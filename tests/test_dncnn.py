"""DnCNN: the arch matches the published checkpoint, the restricted converter loads it (and refuses malicious
pickles), the weights denoise, the arch quantizes, and tools/build_trt.py degrades cleanly without TensorRT."""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.archs import DnCNN
from qdr_plugin.quant import QuantConv2d, QuantSub, Sub, calibrate, fold_batchnorm, quantize_model
from qdr_plugin.utils.dncnn_convert import load_dncnn_module_state

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
CKPT = SHARED / 'weights' / 'DnCNN' / 'dncnn_pytorch_sigma25_model.pth'
SET12_01 = SHARED / 'datasets' / 'Set12' / '01.png'
needs_ckpt = pytest.mark.skipif(not CKPT.is_file(), reason=f'{CKPT} is absent')
TRT_MISSING = 'build_trt: TensorRT is not installed (pip install tensorrt) — nothing built.'


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomize_bn(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=gen) * 0.1)


@pytest.fixture(scope='module')
def published_state() -> dict[str, torch.Tensor]:
    return load_dncnn_module_state(CKPT)


def test_layout_registry_and_dfd_layer():
    assert ARCH_REGISTRY.get('DnCNN') is DnCNN
    state = DnCNN().state_dict()
    assert list(state)[:8] == [
        'dncnn.0.weight', 'dncnn.0.bias', 'dncnn.2.weight', 'dncnn.3.weight', 'dncnn.3.bias', 'dncnn.3.running_mean',
        'dncnn.3.running_var', 'dncnn.3.num_batches_tracked',
    ]
    assert list(state)[-1] == 'dncnn.47.weight' and len(state) == 2 + 15 * 6 + 1
    assert DnCNN.dfd_layer == DnCNN().dfd_layer == 'dncnn.25'
    assert DnCNN().decoder_layers == ['dncnn.37', 'dncnn.46']  # ReLU outputs after the bottleneck
    for kwargs in ({}, {'depth': 20}, {'depth': 3}, {'depth': 2}, {'bn': False}, {'depth': 6, 'bn': False}):
        model = DnCNN(**kwargs)
        assert isinstance(dict(model.named_modules())[model.dfd_layer], nn.ReLU), kwargs
    assert DnCNN(bn=False).dfd_layer == 'dncnn.17' and 'dncnn.2.bias' in DnCNN(bn=False).state_dict()
    with pytest.raises(ValueError, match='out_ch == in_ch'):
        DnCNN(in_ch=1, out_ch=3)


@needs_ckpt
def test_published_checkpoint_loads_strictly(published_state):
    reference = DnCNN().state_dict()
    assert list(published_state) == list(reference)
    for key, value in reference.items():
        assert published_state[key].shape == value.shape and published_state[key].dtype == value.dtype, key
    DnCNN().load_state_dict(published_state, strict=True)


@needs_ckpt
@pytest.mark.skipif(not SET12_01.is_file(), reason=f'{SET12_01} is absent')
def test_published_weights_denoise_set12(published_state):
    model = DnCNN()
    model.load_state_dict(published_state, strict=True)
    model.eval()
    img = cv2.imread(str(SET12_01), cv2.IMREAD_GRAYSCALE).astype(np.float64) / 255.0
    noisy = img + np.random.default_rng(0).normal(0, 25 / 255, img.shape)
    with torch.no_grad():
        out = model(torch.from_numpy(noisy).float()[None, None])[0, 0].numpy()
    gt = np.round(img * 255)
    psnr = calculate_psnr(np.clip(np.round(out * 255), 0, 255), gt, crop_border=0)
    noisy_psnr = calculate_psnr(np.clip(np.round(noisy * 255), 0, 255), gt, crop_border=0)
    assert psnr > 29.0 and psnr > noisy_psnr + 8, (psnr, noisy_psnr)


def test_converter_roundtrip_of_a_whole_pickled_module(tmp_path, monkeypatch, capsys):
    """A ``torch.save(model)`` of a ``__main__.DnCNN`` (zip format, as a current PyTorch writes it)."""

    class PublishedDnCNN(nn.Module):  # the published script's class: only the ``dncnn`` Sequential matters
        def __init__(self):
            super().__init__()
            self.dncnn = DnCNN(depth=3, width=8).dncnn

    PublishedDnCNN.__module__, PublishedDnCNN.__qualname__, PublishedDnCNN.__name__ = '__main__', 'DnCNN', 'DnCNN'
    monkeypatch.setattr(sys.modules['__main__'], 'DnCNN', PublishedDnCNN, raising=False)
    original = PublishedDnCNN()
    _randomize_bn(original)
    src, dst = tmp_path / 'model.pth', tmp_path / 'out' / 'dncnn.pth'
    torch.save(original, src)
    state = load_dncnn_module_state(src)
    assert all(torch.equal(state[k], v) for k, v in original.state_dict().items())
    assert state.keys() == original.state_dict().keys()

    _load_tool('convert_dncnn').main([str(src), str(dst)])
    assert str(dst) in capsys.readouterr().out
    converted = torch.load(dst, weights_only=True)
    DnCNN(depth=3, width=8).load_state_dict(converted['params'], strict=True)


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize('container', ['pickle', 'torch.save'])
@pytest.mark.parametrize('target', ['os.system', 'builtins.eval'])
def test_malicious_pickle_is_refused(tmp_path, container, target):
    marker = tmp_path / 'pwned'
    command = f'echo pwned > {marker}'
    evil = _Evil(os.system, command) if target == 'os.system' else _Evil(eval, f'__import__("os").system({command!r})')
    path = tmp_path / 'evil.pth'
    if container == 'pickle':
        path.write_bytes(pickle.dumps({'model': evil}, protocol=2))
    else:
        torch.save({'model': evil}, path)
    with pytest.raises(pickle.UnpicklingError, match=rf'{target}.*not the expected DnCNN checkpoint'):
        load_dncnn_module_state(path)
    assert not marker.exists()


def test_tiny_dncnn_folds_and_quantizes():
    model = DnCNN(depth=3, width=8)
    _randomize_bn(model)
    model.eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        expected = model(x)
    assert fold_batchnorm(model) == 1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=1e-4)
    quantize_model(model)
    assert type(model.sub) is QuantSub and isinstance(model.sub, Sub)
    assert sum(isinstance(m, QuantConv2d) for m in model.modules()) == 3
    # x is not rounded on its way to the output; the predicted noise is (so the last conv runs in INT8)
    assert isinstance(model.sub.quant_a, nn.Identity) and model.sub.quant_b.qmin == -128
    calibrate(model, [x], 'max')
    with torch.no_grad():
        out = model(x)
    assert (out - expected).abs().max() < 0.05
    with torch.no_grad():
        torch.testing.assert_close(x - out, model.sub.quant_b(model.dncnn(x)))


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None, reason='TensorRT is installed here')
def test_build_trt_without_tensorrt_exits_3(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'build_trt.py'), str(tmp_path / 'model.onnx'), '--engine',
         str(tmp_path / 'model.engine')],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 3
    assert result.stdout.splitlines() == [TRT_MISSING] and result.stderr == ''
    assert not (tmp_path / 'model.engine').exists()


@pytest.mark.parametrize('fp16', [False, True])
def test_build_trt_builder_calls(fp16):
    """The build path against a mock TensorRT: network flags, builder flags and the optimization profile."""
    tool = _load_tool('build_trt')
    trt = mock.MagicMock()
    trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED, trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH = 1, 0
    builder = trt.Builder.return_value
    network = builder.create_network.return_value
    network.get_input.return_value.shape, network.get_input.return_value.name = (-1, 1, -1, -1), 'input'
    builder.build_serialized_network.return_value = b'plan'
    args = tool._parse_args(['m.onnx', '--engine', 'm.engine', '--shape', '1x1x256x256'] + ['--fp16'] * fp16)
    plan, opt = tool.build(trt, args)
    assert plan == b'plan' and opt == (1, 1, 256, 256)
    builder.create_network.assert_called_once_with(1 if fp16 else 2)
    builder.create_optimization_profile.return_value.set_shape.assert_called_once_with(
        'input', (1, 1, 64, 64), (1, 1, 256, 256), (1, 1, 1024, 1024)
    )
    config = builder.create_builder_config.return_value
    flags = [c.args[0] for c in config.set_flag.call_args_list]
    assert flags == ([trt.BuilderFlag.INT8, trt.BuilderFlag.FP16] if fp16 else [])
    assert tool._profile_shapes((1, 3, -1, -1), None) == ((1, 3, 64, 64), (1, 3, 256, 256), (1, 3, 1024, 1024))
    with pytest.raises(SystemExit, match='matching the ONNX input'):
        tool._profile_shapes((-1, 3, -1, -1), '1x1x64x64')
