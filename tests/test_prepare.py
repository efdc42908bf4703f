"""``qdr_plugin.prepare.prepare``: the one entry that folds, quantizes, ties and calibrates, and what goes through it
(QAT's start in ``QDRModel``, checkpoint loading, the per-layer sensitivity, ``benchmarks/speed.py``), on tiny real
networks: an RRDBNet whose pixel-unshuffle shows its first convolution 4x (scale 2) or 16x (scale 1) the image's
channels, a DnCNN with BatchNorm, an EFM."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
import yaml
from basicsr.archs.rrdbnet_arch import RRDBNet
from basicsr.models import build_model
from basicsr.utils.options import parse_options
from torch import nn

from qdr_plugin.archs import EFM, DnCNN
from qdr_plugin.bench.sensitivity import quantize_from_options, quantized_layers
from qdr_plugin.cli import main as cli_main
from qdr_plugin.data.calibration import calibration_inputs, training_calibration_batches
from qdr_plugin.deploy import export_onnx
from qdr_plugin.deploy.options import read_options
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import ActQuantizer, QuantConfig, is_quantized, quantizers
from qdr_plugin.utils.checkpoint import load_networks
from qdr_plugin.utils.rng import rng_state, set_rng_state

ROOT = Path(__file__).resolve().parents[1]


def _rrdb_opt(scale: int) -> dict:
    return {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': scale, 'num_feat': 8, 'num_block': 1,
            'num_grow_ch': 4}


def _rrdbnet(scale: int, seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    return RRDBNet(**{k: v for k, v in _rrdb_opt(scale).items() if k != 'type'}).eval()


def _color_images(folder: Path, count: int, size: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        base = 128 + 70 * np.sin(xx / (3 + i)) * np.cos(yy / (4 + i))
        img = base[..., None] + np.arange(3) * 20 + rng.normal(0, 4, (size, size, 3))
        cv2.imwrite(str(folder / f'{i:02d}.png'), np.clip(img, 0, 255).astype(np.uint8))


def _rrdb_options(tmp_path: Path, scale: int, calibration: str = 'max') -> tuple[Path, dict]:
    """The file and the options of a tiny RRDBNet: scale 2 trains super-resolution (bicubic LR), scale 1
    denoising (RGB)."""
    train = {'name': 'train', 'dataroot_gt': str(tmp_path / 'train'), 'gt_size': 16, 'batch_size_per_gpu': 2}
    if scale == 1:
        train.update(type='GaussianNoiseDataset', in_ch=3, sigma=25)
    else:
        train.update(type='BicubicSRDataset', scale=scale)
    _color_images(tmp_path / 'train', 3, 24, 0)
    options = {'network_g': _rrdb_opt(scale), 'scale': scale, 'quant': {'bits': 8, 'calibration': calibration},
               'datasets': {'train': train}}
    path = tmp_path / f'rrdb_x{scale}_{calibration}.yml'
    path.write_text(yaml.safe_dump(options))
    return path, read_options(path)


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ the entry itself
def test_prepare_folds_snapshots_quantizes_and_calibrates():
    torch.manual_seed(0)
    net = DnCNN(in_ch=1, out_ch=1, width=4, depth=4, bn=True)
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding shows
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        reference = net(x)
    config = QuantConfig(calibration='max')
    prepared = prepare(net, {'type': 'DnCNN', 'in_ch': 1}, config, (x[i : i + 1] for i in range(2)), keep_float=True)
    assert prepared.network is net and is_quantized(net)
    teacher = prepared.float_network
    assert not is_quantized(teacher) and not any(isinstance(m, nn.BatchNorm2d) for m in teacher.modules())
    with torch.no_grad():
        torch.testing.assert_close(teacher.eval()(x), reference, atol=1e-5, rtol=1e-5)
    acts = {id(q): q for _, q in quantizers(net) if isinstance(q, ActQuantizer) and q.enabled}
    assert prepared.calibrated == len(acts) > 0 and all(bool(q.initialized) for q in acts.values())

    bare = prepare(DnCNN(in_ch=1, out_ch=1, width=4, depth=4, bn=True), {'in_ch': 1}, config)
    assert bare.float_network is None and bare.calibrated == 0
    assert not any(bool(q.initialized) for _, q in quantizers(bare.network) if isinstance(q, ActQuantizer))


@pytest.mark.parametrize('scale', [1, 2])
def test_rrdbnet_quantizes_with_the_options_example_input(scale):
    """The first conv sees 48 (scale 1) or 12 (scale 2) channels; the example input has the options' 3."""
    net = _rrdbnet(scale)
    assert net.conv_first.in_channels == 3 * (4 if scale == 2 else 16)
    x = torch.rand(1, 3, 16, 16)
    prepared = prepare(net, _rrdb_opt(scale), QuantConfig(), [x])
    with torch.no_grad():
        assert prepared.network(x).shape == (1, 3, 16 * scale, 16 * scale)


# ------------------------------------------------------------------------------------------ what goes through it
@pytest.mark.parametrize('scale', [1, 2])
def test_sensitivity_quantizes_an_fp32_rrdbnet_as_prepare_does(tmp_path, scale):
    _, opt = _rrdb_options(tmp_path, scale)
    net = _rrdbnet(scale)
    quantized = quantize_from_options(net, opt, 3)
    assert not is_quantized(net)  # a quantized copy
    config = QuantConfig.from_options(opt['quant'])
    crops = [torch.from_numpy(a) for a in calibration_inputs(opt['datasets']['train'], 3, config.calib_size)]
    expected = prepare(copy.deepcopy(net), opt['network_g'], config, crops).network
    assert _same_state(quantized, expected)
    other = quantize_from_options(net, _rrdb_options(tmp_path, scale, 'percentile')[1], 3)
    assert not _same_state(quantized, other)  # quant.calibration is what decides the step sizes


def test_rrdbnet_sensitivity_through_basicsr_bench(tmp_path):
    """``basicsr bench --sensitivity`` of an FP32 RRDBNet (x2) checkpoint: quantized, calibrated, one layer at a
    time."""
    yml, opt = _rrdb_options(tmp_path, 2)
    torch.save({'params': _rrdbnet(2).state_dict()}, tmp_path / 'rrdb.pth')
    _color_images(tmp_path / 'data' / 'Set5', 2, 32, 5)
    out = tmp_path / 'out'
    cli_main(['bench', '--task', 'sr', '--scale', '2', '-opt', str(yml), '--datasets', 'Set5',
              '--data-root', str(tmp_path / 'data'), '--model', f'rrdb={tmp_path / "rrdb.pth"}', '--no-speed',
              '--sensitivity', '--out', str(out)])
    payload = json.loads((out / 'sensitivity.json').read_text())
    layers = quantized_layers(quantize_from_options(_rrdbnet(2), opt, 16))
    assert sorted(row['layer'] for row in payload['rows']) == sorted(name for name, _, _ in layers)
    fp32_row = json.loads((out / 'bench.json').read_text())['rows'][0]
    assert payload['fp32_psnr'] == pytest.approx(fp32_row['psnr'], abs=1e-3)


def test_quantized_rrdbnet_checkpoint_reloads(tmp_path):
    """Export, ``ptq`` (its teacher) and ``bench`` load a QDR checkpoint through :func:`load_networks`."""
    _, opt = _rrdb_options(tmp_path, 1)
    student = quantize_from_options(_rrdbnet(1), opt, 2)
    torch.save({'params': student.state_dict(), 'params_teacher': _rrdbnet(1).state_dict()}, tmp_path / 'qdr.pth')
    loaded, teacher = load_networks(opt['network_g'], opt['quant'], str(tmp_path / 'qdr.pth'))
    assert _same_state(loaded, student) and not is_quantized(teacher)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), student(x))


def test_qat_start_is_prepare_on_the_training_calibration_batches(write_options, monkeypatch):
    """QDRModel's student and teacher at the start of QAT are :func:`prepare`'s network and float snapshot, on the
    same training batches, drawn at the same point of the random stream (DnCNN: BatchNorm folded first)."""
    yml = write_options('qat_start', network_g={'type': 'DnCNN', 'in_ch': 1, 'out_ch': 1, 'width': 4, 'depth': 3,
                                                'bn': True},
                        quant={'calibration': 'max', 'calib_size': 12})
    monkeypatch.setattr(sys, 'argv', ['basicsr', '-opt', str(yml)])
    opt = parse_options(str(yml.parent), is_train=True)[0]
    model = build_model(opt)  # fp32_warmup_iter 1: still FP32
    net = model.get_bare_model(model.net_g)
    assert not is_quantized(net)
    fp32, state = copy.deepcopy(net), rng_state()

    model._start_qat()
    after = rng_state()
    set_rng_state(state)
    config = QuantConfig.from_options(opt['quant'])
    batches = training_calibration_batches(opt['datasets']['train'], config.calib_batches, config.calib_size,
                                           opt['manual_seed'])
    expected = prepare(fp32, opt['network_g'], config, batches, keep_float=True)
    assert _same_state(net, expected.network) and _same_state(model.net_t, expected.float_network)
    assert torch.equal(torch.get_rng_state(), after['torch']) and np.array_equal(np.random.get_state()[1],
                                                                                  np.asarray(after['numpy'][1]))


def _speed_script():
    spec = importlib.util.spec_from_file_location('speed_script', ROOT / 'benchmarks' / 'speed.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _constants(path: Path) -> dict[str, np.ndarray]:
    """Every constant of an ONNX graph (initializers and ``Constant`` nodes, where the exporter puts the scales)."""
    graph = onnx.load(str(path)).graph
    values = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == 'Constant':
            values[node.output[0]] = onnx.numpy_helper.to_array(onnx.helper.get_attribute_value(node.attribute[0]))
    return values


def test_speed_script_int8_file_is_prepare_with_the_options_calibration(tmp_path):
    """``benchmarks/speed.py`` calibrates its INT8 export with the options' method (``max`` here), as
    :func:`prepare` does; nothing is timed."""
    speed = _speed_script()
    network_opt = {'type': 'EFM', 'in_ch': 1, 'width': 4, 'depth': 1}
    torch.manual_seed(0)
    net = EFM(in_ch=1, width=4, depth=1).eval()
    files = speed.model_files(net, network_opt, QuantConfig(calibration='max'), tmp_path)
    assert set(files) == {'FP32 ONNX Runtime', 'INT8 ONNX Runtime (QDR export)', 'INT8 ONNX Runtime (ORT PTQ)'}
    crops = speed._calibration_crops(1)
    written = _constants(files['INT8 ONNX Runtime (QDR export)'])
    for method, same in (('max', True), ('percentile', False)):
        expected = prepare(copy.deepcopy(net), network_opt, QuantConfig(calibration=method), crops).network
        path = export_onnx(expected.eval(), tmp_path / f'expected_{method}.onnx', 1, 'onnxruntime')
        reference = _constants(path)
        assert written.keys() == reference.keys()
        assert all(np.array_equal(written[k], reference[k]) for k in written) == same, method
