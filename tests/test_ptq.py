"""``basicsr ptq``: FP32 checkpoint -> ONNX -> ONNX Runtime ``quantize_static`` (Q/DQ), both targets, tiny sizes."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import qdr_plugin  # noqa: F401  (registers the archs, applies the torchvision alias)
from qdr_plugin.archs import EFM
from qdr_plugin.cli import main
from qdr_plugin.data.calibration import calibration_inputs
from qdr_plugin.deploy import check_onnx
from qdr_plugin.deploy.options import read_options

NETWORK = {'type': 'EFM', 'in_ch': 1, 'width': 8, 'depth': 1}


@pytest.fixture
def fp32_setup(write_options, workdir: Path) -> tuple[Path, Path, EFM]:
    """(options yml, FP32 checkpoint, the network) in ``workdir``."""
    torch.manual_seed(0)
    net = EFM(in_ch=1, width=8, depth=1).eval()
    ckpt = workdir / 'fp32.pth'
    torch.save({'params': net.state_dict()}, ckpt)
    return write_options('ptq', network_g=dict(NETWORK)), ckpt, net


def _tiny_input() -> np.ndarray:
    yy, xx = np.mgrid[0:24, 0:40]
    clean = 0.5 + 0.3 * np.sin(xx / 4.0) * np.cos(yy / 5.0)
    noisy = clean + np.random.default_rng(3).normal(0, 25 / 255, clean.shape)
    return noisy[None, None].astype(np.float32)


def _narrow_integer_convs(path: Path) -> list[str]:
    """Convs with an int8 weight, input channels a multiple of 4, and fewer than 16 output channels."""
    graph = onnx.load(str(path)).graph
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    narrow = []
    for node in graph.node:
        dq = producers.get(node.input[1]) if node.op_type == 'Conv' else None
        weight = weights.get(dq.input[0]) if dq is not None and dq.op_type == 'DequantizeLinear' else None
        if weight is not None and weight.dtype == np.int8 and weight.shape[1] % 4 == 0 and weight.shape[0] < 16:
            narrow.append(node.name)
    return narrow


@pytest.mark.parametrize('target', ['onnxruntime', 'tensorrt'])
@pytest.mark.parametrize('method', ['minmax', 'percentile', 'entropy'])
def test_ptq_writes_a_checked_int8_model_close_to_fp32(fp32_setup, workdir, method, target, capsys):
    yml, ckpt, net = fp32_setup
    out = workdir / f'ptq_{method}_{target}.onnx'
    main(['ptq', '-opt', str(yml), '--ckpt', str(ckpt), '--out', str(out), '--calib', method, '--target', target,
          '--num-calib', '4'])
    assert 'OK' in capsys.readouterr().out

    report = check_onnx(out, target)
    assert report.problems == []
    ops = Counter(node.op_type for node in onnx.load(str(out)).graph.node)
    assert ops['QuantizeLinear'] > 0 and ops['DequantizeLinear'] > 0

    narrow = _narrow_integer_convs(out)
    # onnxruntime: every integer conv was widened to what ONNX Runtime's fast kernel takes; tensorrt: left as it was
    assert (narrow == []) if target == 'onnxruntime' else (len(narrow) > 0)

    x = _tiny_input()
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    (y,) = session.run(None, {'input': x})
    assert y.shape == x.shape
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    psnr = 10 * np.log10(1.0 / np.mean((y - ref) ** 2))
    assert psnr > 25, f'{method}/{target}: INT8 vs FP32 PSNR {psnr:.1f} dB'


def _error_line(capsys, argv: list[str]) -> str:
    """The one line ``basicsr`` prints last on stderr for a user error (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_missing_checkpoint_exits_naming_it(fp32_setup, workdir, capsys):
    yml, _, _ = fp32_setup
    message = _error_line(capsys, ['ptq', '-opt', str(yml), '--ckpt', 'nowhere.pth', '--out', 'x.onnx', '--calib',
                                   'minmax'])
    assert message.startswith('basicsr ptq:') and 'nowhere.pth' in message
    assert not (workdir / 'x.onnx').exists()


def test_bad_calibration_method_and_missing_train_set_exit_with_the_fix(fp32_setup, write_options, delete_key,
                                                                         capsys):
    yml, ckpt, _ = fp32_setup
    message = _error_line(capsys, ['ptq', '-opt', str(yml), '--ckpt', str(ckpt), '--out', 'x.onnx', '--calib', 'kl'])
    assert re.match(r'basicsr ptq: unknown calibration method .*minmax \| percentile', message), message
    no_train = write_options('no_train', network_g=dict(NETWORK), datasets={'train': delete_key})
    message = _error_line(capsys, ['ptq', '-opt', str(no_train), '--ckpt', str(ckpt), '--out', 'x.onnx', '--calib',
                                   'minmax'])
    assert re.match(r'basicsr ptq: .* no datasets\.train block', message), message


def test_calibration_inputs_are_deterministic_noisy_crops(fp32_setup):
    train_opt = read_options(fp32_setup[0])['datasets']['train']
    state, torch_state = np.random.get_state(), torch.get_rng_state()
    first = calibration_inputs(train_opt, 6, None)
    second = calibration_inputs(train_opt, 6, 12)
    again = calibration_inputs(train_opt, 6, None)
    assert [a.shape for a in first] == [(1, 1, 16, 16)] * 6 and [a.shape for a in second] == [(1, 1, 12, 12)] * 6
    assert all(a.dtype == np.float32 for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1])
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global RNG states are left as they were
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_sr_options_give_calibration_inputs_at_the_options_scale():
    """basicsr copies the top-level ``scale`` into every dataset and gives each its phase; the plugin's commands and
    the benchmark scripts read options the same way."""
    opt = read_options(Path(__file__).resolve().parents[1] / 'options' / 'sr' / 'qdr_edsr_small_x4.yml')
    assert all(d['scale'] == opt['scale'] == 4 for d in opt['datasets'].values())
    assert {key: d['phase'] for key, d in opt['datasets'].items()} == {'train': 'train', 'val': 'val'}
    crops = calibration_inputs(opt['datasets']['train'], 2, size=32)
    assert [c.shape for c in crops] == [(1, 3, 8, 8)] * 2
