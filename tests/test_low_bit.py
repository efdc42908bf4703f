"""Low-bit QAT settings and the sibling methods' training options through QDRModel and basicsr's options: first
and last layers kept FP32 below 8 bits, the step sizes' learning rate, relational KD beside DFD, and CR-QAT's
curriculum (stages quantized and trained in order, later stages FP32 and frozen)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from basicsr.models import build_model
from basicsr.utils.options import parse_options
from conftest import refusal
from torch import nn

from qdr_plugin.archs import EFM
from qdr_plugin.models.curriculum import Curriculum
from qdr_plugin.quant import QuantConfig, QuantConv2d, quantize_model
from qdr_plugin.quant.fake_quant import FakeQuantizer


def _parse(yml: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(sys, 'argv', ['basicsr', '-opt', str(yml)])
    opt, _ = parse_options(str(yml.parent), is_train=True)
    Path(opt['path']['models']).mkdir(parents=True, exist_ok=True)
    return opt


def _kinds(net: nn.Module) -> dict[str, bool]:
    return {name: isinstance(m, QuantConv2d) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.mark.parametrize(('quant', 'kept'), [
    ({'bits': 8}, False),
    ({'bits': 4}, True),
    ({'weight_bits': 4, 'act_bits': 8}, True),
    ({'bits': 4, 'keep_first_last': False}, False),
    ({'bits': 8, 'keep_first_last': True}, True),
])
def test_first_and_last_layers_stay_fp32_below_8_bits(quant: dict, kept: bool) -> None:
    net = quantize_model(EFM(in_ch=1, width=4, depth=1), QuantConfig.from_options(quant))
    kinds = _kinds(net)
    assert kinds['head'] is not kept and kinds['tail'] is not kept
    assert all(q for name, q in kinds.items() if name not in ('head', 'tail'))


def test_keep_first_last_follows_the_data_flow_not_the_module_order() -> None:
    class Reversed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.last = nn.Conv2d(4, 1, 3, padding=1)
            self.middle = nn.Conv2d(4, 4, 3, padding=1)
            self.first = nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.last(self.middle(self.first(x)))

    kinds = _kinds(quantize_model(Reversed(), QuantConfig(weight_bits=4, act_bits=4), torch.zeros(1, 1, 8, 8)))
    assert kinds == {'last': False, 'middle': True, 'first': False}


def test_end_ops_stay_fp32_with_activations_below_8_bits() -> None:
    """The ops outside the float first / last layers: an input residual before the first convolution and the
    global residual after the last stay float with 4-bit activations (a 16-level image otherwise), quantized with
    8-bit ones; an add between the two layers is always quantized."""
    from qdr_plugin.quant import ops

    class Residuals(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre, self.mid, self.post = ops.Add(), ops.Add(), ops.Add()
            self.first = nn.Conv2d(1, 4, 3, padding=1)
            self.middle = nn.Conv2d(4, 4, 3, padding=1)
            self.last = nn.Conv2d(4, 1, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feat = self.first(self.pre(x, x))
            return self.post(x, self.last(self.mid(feat, self.middle(feat))))

    example = torch.zeros(1, 1, 8, 8)
    for config, floats in [(QuantConfig(weight_bits=4, act_bits=4), {'pre', 'post'}),
                           (QuantConfig(weight_bits=4, act_bits=8), set()),
                           (QuantConfig(weight_bits=4, act_bits=4, keep_first_last=False), set())]:
        net = quantize_model(Residuals(), config, example)
        assert {name for name in ('pre', 'mid', 'post') if type(getattr(net, name)) is ops.Add} == floats


def test_keep_first_last_must_be_a_flag(write_options, capsys) -> None:
    yml = write_options('flag', quant={'keep_first_last': 'yes'})
    assert 'quant.keep_first_last: must be true or false' in refusal(['train', '-opt', str(yml)], capsys)


def test_step_sizes_learn_at_their_own_rate(write_options, monkeypatch) -> None:
    opt = _parse(write_options('step_lr', train={'fp32_warmup_iter': 0, 'step_lr_mult': 0.1}), monkeypatch)
    model = build_model(opt)
    weights, steps = model.optimizer_g.param_groups
    assert weights['lr'] == pytest.approx(1e-3) and steps['lr'] == pytest.approx(1e-4)
    assert steps['weight_decay'] == 0.0
    model.opt['train']['optim_g']['lr'] = 2e-3  # a resume with a new learning rate keeps the ratio
    model._take_learning_rate_from_options()
    assert weights['lr'] == pytest.approx(2e-3) and steps['lr'] == pytest.approx(2e-4)


def test_relational_kd_trains_beside_dfd(write_options, monkeypatch) -> None:
    opt = _parse(write_options('relational', train={
        'fp32_warmup_iter': 0, 'lmr_opt': None,
        'dfd_opt': {'type': 'PKDLoss', 'loss_weight': 6.0, 'layer': ['encoders.0', 'bottleneck']},
        'relational_opt': {'type': 'RelationalKDLoss', 'grid': 2, 'anchors': 'teacher'}}), monkeypatch)
    model = build_model(opt)
    model.feed_data({'lq': torch.rand(2, 1, 16, 16), 'gt': torch.rand(2, 1, 16, 16)})
    model.optimize_parameters(1)
    assert {'l_pix', 'l_dfd', 'l_rkd'} <= set(model.log_dict)
    assert model.log_dict['l_rkd'] >= 0 and torch.isfinite(torch.tensor(model.log_dict['l_dfd']))


def test_relational_layer_must_exist(write_options, capsys) -> None:
    yml = write_options('rel_layer', train={'relational_opt': {'type': 'RelationalKDLoss', 'layer': 'botleneck'}})
    message = refusal(['train', '-opt', str(yml)], capsys)
    assert "train.relational_opt.layer: EFM has no module named 'botleneck'" in message and 'bottleneck' in message


def test_curriculum_stage_boundaries_follow_the_budget() -> None:
    curriculum = Curriculum({'budget': [1, 2]}, EFM(in_ch=1, width=4, depth=1))
    stages = [curriculum.stage_at(i, 10, 40) for i in range(11, 41)]  # 30 QAT iterations after 10 FP32 ones
    assert stages == [0] * 10 + [1] * 20
    assert curriculum.stages == [['head', 'encoders', 'downs', 'bottleneck'], ['*']]  # the EFM's default


def test_curriculum_quantizes_and_trains_the_stages_in_order(write_options, monkeypatch) -> None:
    opt = _parse(write_options('curriculum', train={'fp32_warmup_iter': 0, 'total_iter': 3, 'lmr_opt': None,
                                                    'curriculum': {'budget': [1, 2]}}), monkeypatch)
    model = build_model(opt)
    net = model.net_g
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model.feed_data({'lq': torch.rand(2, 1, 16, 16), 'gt': torch.rand(2, 1, 16, 16)})
    model.optimize_parameters(1)  # stage 1: encoder and bottleneck
    after = net.state_dict()
    assert not torch.equal(before['head.weight'], after['head.weight'])
    assert not torch.equal(before['bottleneck.0.conv1.weight'], after['bottleneck.0.conv1.weight'])
    assert torch.equal(before['tail.weight'], after['tail.weight'])
    assert torch.equal(before['decoders.0.blocks.0.conv1.weight'], after['decoders.0.blocks.0.conv1.weight'])
    assert not net.tail.weight.requires_grad
    enabled = {name: q.enabled for name, q in net.named_modules() if isinstance(q, FakeQuantizer)}
    assert all(enabled[n] for n in enabled if n.startswith(('head', 'encoders', 'bottleneck')))
    assert not any(enabled[n] for n in enabled if n.startswith(('decoders', 'tail')))
    model.optimize_parameters(2)  # stage 2: everything
    assert net.tail.weight.requires_grad
    assert all(q.enabled for q in net.modules() if isinstance(q, FakeQuantizer))
    assert not torch.equal(before['tail.weight'], net.state_dict()['tail.weight'])


@pytest.mark.parametrize(('curriculum', 'expected'), [
    ({'stages': [['head']]}, 'train.curriculum.stages: must be a list of at least two lists'),
    ({'stages': [['head'], ['tail']]}, "train.curriculum.stages: no stage holds module 'encoders.0.0.conv1'"),
    ({'stages': [['*'], ['tail']]}, 'train.curriculum.stages: stage 2 holds no module of EFM'),
    ({'budget': [1, 0]}, 'train.curriculum.budget: must be one positive number per stage'),
    ({'stagse': [['*']]}, "train.curriculum.stagse: unknown key 'stagse'"),
])
def test_curriculum_options_are_checked_before_training(write_options, capsys, curriculum, expected) -> None:
    yml = write_options('bad_curriculum', train={'curriculum': curriculum})
    assert expected in refusal(['train', '-opt', str(yml)], capsys)


class _CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from qdr_plugin.quant import ops

        self.head = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.cat = ops.Concat()
        self.tail = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.head(x))
        return self.tail(self.cat(h, torch.relu(self.body(h))))


def test_observer_scheme_observes_ranges_and_learns_none(tmp_path: Path) -> None:
    from qdr_plugin.deploy import export_onnx
    from qdr_plugin.quant import calibrate
    from qdr_plugin.quant.fake_quant import OBSERVER_MOMENTUM
    from qdr_plugin.quant.modules import QuantConcat

    net = quantize_model(_CatNet(), QuantConfig(scheme='observer'), torch.zeros(1, 1, 8, 8))
    assert _kinds(net) == {'head': False, 'body': True, 'tail': True}  # the first layer stays FP32
    assert not isinstance(net.cat, QuantConcat)  # and every concatenation
    calibrate(net, [torch.rand(2, 1, 8, 8)], 'max')
    q = net.body.act_quant
    assert not q.symmetric and (q.qmin, q.qmax) == (0, 255)
    assert not any(p.requires_grad for n, p in net.named_parameters() if n.endswith(('step', 'zero_point')))
    weights = net.body.weight_quant.step
    assert torch.allclose(weights, net.body.weight.abs().max() / 127)  # one step for the whole tensor
    low, high = float(-q.zero_point * q.step), float((255 - q.zero_point) * q.step)
    net.train()
    with torch.no_grad():
        net.body.weight.mul_(2)
    net(torch.full((1, 1, 8, 8), 5.0))  # a brighter batch widens the observed range a little
    assert torch.allclose(net.body.weight_quant.step, net.body.weight.abs().max() / 127)
    new_high = float(q.running_range[1])
    assert high < new_high < high + OBSERVER_MOMENTUM * 40 and float(q.running_range[0]) == pytest.approx(low * 0.99)
    assert float(q.step) == pytest.approx((new_high - float(q.running_range[0])) / 255, rel=1e-5)
    net.eval()
    export_onnx(net, tmp_path / 'observer.onnx', 1, 'onnxruntime')
    assert (tmp_path / 'observer.onnx').stat().st_size > 0


def test_observer_scheme_refuses_learned_or_symmetric_settings(write_options, capsys) -> None:
    yml = write_options('observer_sym', quant={'scheme': 'observer', 'act_symmetric': True})
    assert 'quant.act_symmetric: does not go with scheme: observer' in refusal(['train', '-opt', str(yml)], capsys)
    yml = write_options('observer_typo', quant={'scheme': 'observe'})
    assert 'quant.scheme: must be one of lsq, observer' in refusal(['train', '-opt', str(yml)], capsys)


def test_pack_int4_puts_the_first_value_in_the_low_nibble() -> None:
    from qdr_plugin.deploy.int4 import pack_int4

    assert pack_int4(np.array([1, -2, 7], np.int8)) == bytes([0xE1, 0x07])


def test_int4_weights_keep_the_numbers_and_halve_the_weights(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    from qdr_plugin.deploy import export_onnx
    from qdr_plugin.deploy.check import check_onnx
    from qdr_plugin.deploy.int4 import int4_weights
    from qdr_plugin.quant import calibrate

    torch.manual_seed(0)
    files = {}
    for bits in (4, 8):
        net = quantize_model(EFM(in_ch=1, width=8, depth=1), QuantConfig(weight_bits=bits, act_bits=8))
        calibrate(net, [torch.rand(1, 1, 32, 32) for _ in range(2)], 'max')
        files[bits] = export_onnx(net.eval(), tmp_path / f'w{bits}.onnx', 1, 'onnxruntime')
        model, converted = int4_weights(onnx.load(str(files[bits])))
        quantized = sum(hasattr(m, 'weight_quant') for m in net.modules())
        assert converted == (quantized if bits == 4 else 0)  # 8-bit weights do not fit and stay INT8
        if bits == 4:
            onnx.save(model, tmp_path / 'w4_int4.onnx')
            assert check_onnx(tmp_path / 'w4_int4.onnx', 'onnxruntime', net).problems == []
            int4_net = net
    x = np.random.default_rng(0).random((1, 1, 24, 40), dtype=np.float32)
    # both files through the same float Q/DQ arithmetic (the INT4 file's convolutions run in float; the INT8 file's
    # integer kernels round differently at ties), so only the stored integers could make the outputs differ
    run = {name: ort.InferenceSession(str(tmp_path / name), providers=['CPUExecutionProvider'],
                                      disabled_optimizers=['QDQSelectorActionTransformer']).run(None, {'input': x})
           for name in ('w4.onnx', 'w4_int4.onnx')}
    np.testing.assert_array_equal(run['w4.onnx'][0], run['w4_int4.onnx'][0])
    weights = sum(m.weight.numel() for m in int4_net.modules() if hasattr(m, 'weight_quant'))
    saved = (tmp_path / 'w4.onnx').stat().st_size - (tmp_path / 'w4_int4.onnx').stat().st_size
    assert saved >= 0.45 * weights  # half a byte per weight


def test_export_int4_needs_4_bit_weights_and_onnxruntime(write_options, capsys) -> None:
    from qdr_plugin.cli import main

    yml = write_options('w4', quant={'bits': 4, 'calibration': 'max'}, train={'total_iter': 1, 'fp32_warmup_iter': 0},
                        val={'val_freq': 1})
    main(['train', '-opt', str(yml)])
    ckpt = Path('experiments/w4/models/net_g_latest.pth')
    main(['export', '-opt', str(yml), '--ckpt', str(ckpt), '--out', 'w4.onnx', '--int4'])
    assert 'weight tensors stored as INT4 (opset 21)' in capsys.readouterr().out
    refused = refusal(['export', '-opt', str(yml), '--ckpt', str(ckpt), '--out', 'w4t.onnx', '--int4', '--target',
                       'tensorrt'], capsys)
    assert '--int4 is for --target onnxruntime' in refused
    yml8 = write_options('w8', train={'total_iter': 1, 'fp32_warmup_iter': 0}, val={'val_freq': 1})
    main(['train', '-opt', str(yml8)])
    refused = refusal(['export', '-opt', str(yml8), '--ckpt', 'experiments/w8/models/net_g_latest.pth', '--out',
                       'w8.onnx', '--int4'], capsys)
    assert 'weights of 8 bits (quant.weight_bits: 8)' in refused


def test_qatie_scheme_trains_and_exports(write_options, capsys) -> None:
    from qdr_plugin.cli import main

    yml = write_options('qatie', quant={'scheme': 'observer', 'calibration': 'max'},
                        train={'total_iter': 2, 'fp32_warmup_iter': 1, 'pixel_opt': {'type': 'QATIELoss'},
                               'dfd_opt': None, 'lmr_opt': None}, val={'val_freq': 2})
    main(['train', '-opt', str(yml)])
    state = torch.load('experiments/qatie/models/net_g_latest.pth', weights_only=True)['params']
    assert any(k.endswith('running_range') for k in state)  # the observed ranges are saved
    main(['export', '-opt', str(yml), '--ckpt', 'experiments/qatie/models/net_g_latest.pth', '--out', 'qatie.onnx'])
    assert 'problem' not in capsys.readouterr().out.split('qatie.onnx [onnxruntime]:')[1].splitlines()[0]


@pytest.mark.parametrize('symmetric', [True, False])
def test_4_bit_activations_export_exactly(tmp_path: Path, symmetric: bool) -> None:
    import onnxruntime as ort

    from qdr_plugin.deploy import export_onnx
    from qdr_plugin.quant import calibrate

    torch.manual_seed(0)
    net = quantize_model(EFM(in_ch=1, width=8, depth=2), QuantConfig(weight_bits=4, act_bits=4,
                                                                      act_symmetric=symmetric))
    calibrate(net, [torch.rand(1, 1, 32, 32) for _ in range(3)], 'max')
    path = export_onnx(net.eval(), tmp_path / 'a4.onnx', 1, 'onnxruntime')
    x = torch.rand(1, 1, 40, 48)
    with torch.no_grad():
        expected = net(x).clamp(0, 1).numpy()
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])  # all graph optimizations on
    got = np.clip(session.run(None, {'input': x.numpy()})[0], 0, 1)
    assert np.abs(got - expected).max() * 255 < 0.5  # the 4-bit grid survives ONNX Runtime's optimizer
