"""``basicsr bench``: tiny real networks (checkpoints and ONNX exports) on tiny image sets, through the command."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.archs.srresnet_arch import MSRResNet
from basicsr.metrics import calculate_psnr
from basicsr.utils.matlab_functions import imresize
from conftest import cannot_create_in

from qdr_plugin.archs import EFM
from qdr_plugin.bench import bench_cli
from qdr_plugin.bench.protocol import sr_set
from qdr_plugin.bench.sensitivity import only_quantizers, quantized_layers
from qdr_plugin.bench.timing import interleaved_median_seconds
from qdr_plugin.cli import main as cli_main
from qdr_plugin.data.gaussian_noise_dataset import add_validation_noise
from qdr_plugin.deploy import export_onnx
from qdr_plugin.quant import QuantConfig, calibrate, quantize_model, quantizers
from qdr_plugin.utils.checkpoint import load_networks

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
EFM_OPT = {'type': 'EFM', 'in_ch': 1, 'width': 4, 'depth': 1}
SR_OPT = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}


def _images(folder: Path, count: int, shape: tuple[int, ...], seed: int) -> None:
    """Smooth 8-bit test images with a little texture (gray ``(H, W)`` or BGR ``(H, W, 3)``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for i in range(count):
        base = 128 + 70 * np.sin(xx / (3 + i)) * np.cos(yy / (4 + i))
        img = base[..., None] + np.arange(shape[2]) * 20 if len(shape) == 3 else base
        cv2.imwrite(str(folder / f'{i:02d}.png'), np.clip(img + rng.normal(0, 4, shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope='module')
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data sets, options, a FP32 and a QDR (quantized) EFM checkpoint and their ONNX exports."""
    root = tmp_path_factory.mktemp('bench')
    data = root / 'data'
    _images(data / 'Set12', 3, (32, 32), 0)
    _images(data / 'CBSD68', 2, (32, 32, 3), 1)
    _images(data / 'Set5' / 'HR', 2, (33, 34, 3), 2)
    _images(data / 'Set14', 2, (32, 30, 3), 3)
    _images(root / 'train', 4, (24, 24), 4)
    (data / 'Set5' / 'LR_bicubic' / 'X2').mkdir(parents=True)
    for i in range(2):  # LR files that differ from MATLAB bicubic, so the test sees which one is used
        hr = cv2.imread(str(data / 'Set5' / 'HR' / f'{i:02d}.png'))[:32, :34]
        cv2.imwrite(str(data / 'Set5' / 'LR_bicubic' / 'X2' / f'{i:02d}x2.png'),
                    cv2.resize(hr, (17, 16), interpolation=cv2.INTER_NEAREST))

    train = {'name': 'train', 'type': 'GaussianNoiseDataset', 'dataroot_gt': str(root / 'train'), 'in_ch': 1,
             'sigma': 25, 'gt_size': 16}
    opt = root / 'efm.yml'
    opt.write_text(yaml.safe_dump({'network_g': EFM_OPT, 'quant': {'bits': 8, 'calibration': 'max'},
                                   'datasets': {'train': train}}))
    (root / 'sr.yml').write_text(yaml.safe_dump({'network_g': SR_OPT, 'scale': 2}))

    torch.manual_seed(0)
    fp32 = EFM(**{k: v for k, v in EFM_OPT.items() if k != 'type'}).eval()
    with torch.no_grad():  # a small residual: the untrained network stays near the identity (PSNR ~ the noisy input's)
        fp32.tail.weight.mul_(0.1)
        fp32.tail.bias.mul_(0.1)
    torch.save({'params': fp32.state_dict()}, root / 'fp32.pth')
    int8 = quantize_model(copy.deepcopy(fp32), QuantConfig(calibration='max'))
    crops = [torch.rand(1, 1, 24, 24) for _ in range(3)]
    calibrate(int8, crops, method='max')
    torch.save({'params': int8.state_dict()}, root / 'int8.pth')
    export_onnx(fp32, root / 'fp32.onnx', 1, fp32=True)
    export_onnx(int8.eval(), root / 'int8.onnx', 1, 'onnxruntime')

    torch.manual_seed(1)
    sr = MSRResNet(**{k: v for k, v in SR_OPT.items() if k != 'type'}).eval()
    torch.save({'params': sr.state_dict()}, root / 'sr.pth')
    export_onnx(sr, root / 'sr.onnx', 3, fp32=True)
    return {'root': root, 'data': data, 'opt': opt, 'sr_opt': root / 'sr.yml'}


def _bench(env: dict[str, Path], out: str, *args: str) -> Path:
    cli_main(['bench', '--data-root', str(env['data']), '--out', str(env['root'] / out), *args])
    return env['root'] / out


def _rows(out: Path, stem: str = 'bench') -> list[dict]:
    return json.loads((out / f'{stem}.json').read_text())['rows']


def test_denoise_bench_checkpoints_and_onnx(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    r = env['root']
    out = _bench(env, 'denoise', '-opt', str(env['opt']), '--model', f'fp32={r / "fp32.pth"}',
                 '--model', f'int8={r / "int8.pth"}', '--model', f'fp32_onnx={r / "fp32.onnx"}',
                 '--model', f'int8_onnx={r / "int8.onnx"}', '--datasets', 'Set12', '--sigmas', '15', '25',
                 '--runs', '2', '--warmup', '1', '--size', '32', '--threads', '1', '--profile')
    rows = _rows(out)
    assert len(rows) == 8  # 4 models x Set12 x 2 sigmas
    by = {(row['model'], row['sigma']): row for row in rows}
    for sigma in (15.0, 25.0):
        fp32, onnx32 = by[('fp32', sigma)], by[('fp32_onnx', sigma)]
        assert (fp32['runtime'], fp32['precision']) == ('pytorch', 'fp32')
        assert (onnx32['runtime'], onnx32['precision']) == ('onnxruntime', 'fp32')
        assert by[('int8', sigma)]['precision'] == by[('int8_onnx', sigma)]['precision'] == 'int8'
        assert abs(fp32['psnr'] - onnx32['psnr']) < 0.01
        assert abs(by[('int8', sigma)]['psnr'] - by[('int8_onnx', sigma)]['psnr']) < 0.5
        assert fp32['retention'] == 1.0 and fp32['drop_db'] == 0.0  # the default reference: the first FP32 model
        int8 = by[('int8', sigma)]
        assert int8['retention'] == pytest.approx(int8['psnr'] / fp32['psnr'], abs=1e-4)
        assert int8['drop_db'] == pytest.approx(fp32['psnr'] - int8['psnr'], abs=1e-3)
    for row in rows:
        assert 15 < row['psnr'] < 40 and 0 < row['ssim'] <= 1 and row['fps'] > 0
        assert len(row['psnr_per_image']) == row['images'] == 3
        assert row['params'] == rows[0]['params'] > 0 and row['macs'] == rows[0]['macs'] > 0  # ONNX: same network

    # the protocol, recomputed by hand for one image: validation noise of index 1, 8-bit output, basicsr PSNR
    net, _ = load_networks(EFM_OPT, {}, str(env['root'] / 'fp32.pth'))
    img = cv2.imread(str(env['data'] / 'Set12' / '01.png'), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    noisy = add_validation_noise(img, 25, 1)
    with torch.no_grad():
        restored = net(torch.from_numpy(noisy)[None, None])[0, 0].clamp(0, 1).numpy()
    expected = calculate_psnr(np.round(restored * 255), np.round(img * 255), 0)
    assert by[('fp32', 25.0)]['psnr_per_image'][1] == pytest.approx(expected, abs=1e-3)

    payload = json.loads((out / 'bench.json').read_text())
    assert payload['command'].startswith('basicsr bench') and payload['date'] and payload['machine']['threads'] == 1
    assert payload['reference'] == 'fp32' and payload['datasets']['Set12']['images'] == ['00.png', '01.png', '02.png']
    with open(out / 'bench.csv') as f:
        table = list(csv.DictReader(f))
    assert len(table) == 8 and {'model', 'runtime', 'precision', 'dataset', 'sigma', 'psnr', 'ssim', 'fps'} <= set(
        table[0])
    markdown = (out / 'bench.md').read_text()
    assert '| fp32_onnx | onnxruntime | fp32 | Set12 | 15 |' in markdown
    captured = capsys.readouterr()
    assert '| fp32_onnx | onnxruntime | fp32 | Set12 | 15 |' in captured.out
    # the kernel report of the INT8 ONNX model (only that one): every convolution but the EFM's transposed ones an
    # integer kernel, named float ones, and with --profile the float op types by time
    kernels = payload['kernels']
    assert set(kernels) == {'int8_onnx'}
    report = kernels['int8_onnx']
    assert report['integer_convs'] == report['convs'] - report['float_convs'] > 0
    assert all(name.endswith('(ConvTranspose)') for name in report['float_conv_nodes'])
    assert report['op_ms_per_run'] and 'QLinearConv' in report['op_ms_per_run']
    assert (f"int8_onnx:\n  ONNX Runtime runs {report['integer_convs']} of {report['convs']} convolutions as integer "
            'kernels') in captured.err
    assert 'top float op types by share of kernel time: ' in captured.err
    for png in ('bench_psnr_vs_fps.png', 'bench_per_image_diff.png'):
        assert (out / png).read_bytes().startswith(PNG_MAGIC)


def test_sr_bench_uses_lr_files_or_matlab_bicubic(env: dict[str, Path]) -> None:
    r = env['root']
    out = _bench(env, 'sr', '--task', 'sr', '-opt', str(env['sr_opt']), '--model', f'torch={r / "sr.pth"}',
                 '--model', f'onnx={r / "sr.onnx"}', '--no-speed')
    rows = _rows(out)
    assert [(row['model'], row['dataset'], row['scale'], row['sigma']) for row in rows] == [
        ('torch', 'Set5', 2, None), ('torch', 'Set14', 2, None), ('onnx', 'Set5', 2, None), ('onnx', 'Set14', 2, None)]
    assert abs(rows[0]['psnr'] - rows[2]['psnr']) < 0.01 and abs(rows[1]['psnr'] - rows[3]['psnr']) < 0.01
    assert all(row['fps'] is None for row in rows)
    assert not (out / 'bench_psnr_vs_fps.png').exists()  # --no-speed
    assert '| scale |' in (out / 'bench.md').read_text()

    set5, set14 = sr_set(env['data'], 'Set5', 2), sr_set(env['data'], 'Set14', 2)
    assert (set5.crop_border, set5.test_y_channel) == (2, True)
    item = set5.dataset[0]
    assert tuple(item['gt'].shape) == (3, 32, 34)  # 33 x 34 mod-cropped to a multiple of 2
    lr_file = cv2.imread(str(env['data'] / 'Set5' / 'LR_bicubic' / 'X2' / '00x2.png'))[..., ::-1] / 255
    np.testing.assert_allclose(item['lq'].numpy().transpose(1, 2, 0), lr_file, atol=1e-6)
    item = set14.dataset[1]
    bicubic = np.round(np.clip(imresize(item['gt'].numpy().transpose(1, 2, 0), 0.5), 0, 1) * 255) / 255
    np.testing.assert_allclose(item['lq'].numpy().transpose(1, 2, 0), bicubic, atol=1e-6)

    # Y-channel PSNR with a 2-pixel border, by hand, for the first Set5 image
    net, _ = load_networks(SR_OPT, None, str(r / 'sr.pth'))
    with torch.no_grad():
        sr = net(set5.dataset[0]['lq'][None])[0].clamp(0, 1).numpy().transpose(1, 2, 0)[..., ::-1]
    gt = set5.dataset[0]['gt'].numpy().transpose(1, 2, 0)[..., ::-1]
    expected = calculate_psnr(np.round(sr * 255), np.round(gt * 255), 2, test_y_channel=True)
    assert rows[0]['psnr_per_image'][0] == pytest.approx(expected, abs=1e-3)


def test_sensitivity_of_quantized_and_fp32_checkpoints(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    r = env['root']
    net, _ = load_networks(EFM_OPT, {}, str(r / 'int8.pth'))
    layers = quantized_layers(net)
    assert len(layers) > 5 and {type(m).__name__ for _, m, _ in layers} >= {'QuantConv2d', 'QuantAdd'}
    common = ['-opt', str(env['opt']), '--datasets', 'Set12', '--sigmas', '25', '--max-images', '2', '--no-speed',
              '--keep-db', '0']
    out = _bench(env, 'sens_int8', *common, '--model', f'fp32={r / "fp32.pth"}', '--model', f'int8={r / "int8.pth"}',
                 '--sensitivity', 'int8')
    payload = json.loads((out / 'sensitivity.json').read_text())
    rows = payload['rows']
    assert sorted(row['layer'] for row in rows) == sorted(name for name, _, _ in layers)
    assert [row['loss_db'] for row in rows] == sorted((row['loss_db'] for row in rows), reverse=True)
    for row in rows:
        assert row['loss_db'] == pytest.approx(payload['fp32_psnr'] - row['psnr'], abs=1e-3)
    assert payload['images'] == ['00.png', '01.png'] and payload['model'] == 'int8'
    assert payload['keep_fp32'] == [row['layer'] for row in rows if row['loss_db'] >= 0]  # --keep-db 0
    # with all quantizers off the quantized network is the FP32 network: same PSNR as the FP32 checkpoint's row
    fp32_row = next(row for row in _rows(out) if row['model'] == 'fp32')
    assert payload['fp32_psnr'] == pytest.approx(fp32_row['psnr'], abs=1e-3)
    assert (out / 'sensitivity.png').read_bytes().startswith(PNG_MAGIC)
    assert len(list(csv.DictReader(open(out / 'sensitivity.csv')))) == len(rows)
    assert 'quant.keep_fp32: [' in capsys.readouterr().out and '| layer |' in (out / 'sensitivity.md').read_text()

    out = _bench(env, 'sens_fp32', *common, '--model', f'fp32={r / "fp32.pth"}', '--sensitivity')
    assert len(json.loads((out / 'sensitivity.json').read_text())['rows']) == len(layers)


def test_only_quantizers_switches_one_layer_and_restores(env: dict[str, Path]) -> None:
    net, _ = load_networks(EFM_OPT, {}, str(env['root'] / 'int8.pth'))
    name, _, owned = quantized_layers(net)[0]
    with only_quantizers(net, owned):
        on = [q for _, q in quantizers(net) if q.enabled]
        assert {id(q) for q in on} == {id(q) for q in owned}
    assert all(q.enabled for _, q in quantizers(net))


@pytest.mark.parametrize(('args', 'message'), [
    (['--model', 'nope'], "--model 'nope': expected NAME=PATH"),
    (['--model', 'a=model.txt'], 'neither a .pth checkpoint nor an .onnx model'),
    (['--model', 'a=missing.onnx'], 'model file missing.onnx (--model a=...) does not exist'),
    (['--model', 'a={fp32_pth}'], 'is a checkpoint: give -opt X.yml'),
    (['--model', 'a={fp32_onnx}', '--datasets', 'BSD100'], "unknown dataset 'BSD100' for --task denoise"),
    (['--model', 'a={fp32_onnx}', '--data-root', '{root}/nowhere'], 'nowhere/Set12 does not exist'),
    (['--model', 'a={fp32_onnx}', '--datasets', 'CBSD68'], 'takes 1-channel input (the ONNX file) but CBSD68 is '
                                                            '3-channel (RGB)'),
    (['--model', 'a={fp32_onnx}', '--model', 'a={int8_onnx}'], 'a is given more than once'),
    (['--model', 'a={fp32_onnx}', '--sensitivity'], '--sensitivity needs a .pth model'),
    (['--model', 'a={fp32_onnx}', '--task', 'sr', '--datasets', 'Set5'], '--task sr needs the scale'),
    (['--model', 'a={fp32_onnx}', '--task', 'sr', '--scale', '5'], '--scale must be one of 2, 3, 4, 8'),
    (['--model', 'a={fp32_onnx}', '--reference', 'b'], "'b' is not one of the --model names (a)"),
])
def test_errors_are_one_clear_line(env: dict[str, Path], args: list[str], message: str,
                                   capsys: pytest.CaptureFixture) -> None:
    files = {f.replace('.', '_'): env['root'] / f for f in ('fp32.pth', 'fp32.onnx', 'int8.onnx')}
    args = [a.format(root=env['root'], **files) for a in args]
    args = ['--data-root', str(env['data']), *args] if '--data-root' not in args else args
    with pytest.raises(SystemExit) as error:
        cli_main(['bench', '--no-speed', '--out', str(env['root'] / 'errors'), *args])
    text = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.value.code == 2 and text.startswith('basicsr bench: ') and message in text, text


def test_out_is_checked_before_any_scoring(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    """An --out that is a file, or a folder that holds results already, is refused before any model is scored;
    --overwrite replaces the results."""
    def scored(*args, **kwargs):
        raise AssertionError('the models were scored before --out was checked')

    monkeypatch.setattr(bench_cli, 'run_benchmark', scored)
    (env['root'] / 'a_file').write_text('not a folder')
    done = env['root'] / 'done'
    done.mkdir()
    (done / 'bench.json').write_text('{"rows": []}')
    cases = [(env['root'] / 'a_file', f'--out {env["root"] / "a_file"} is a file, not a folder; choose another path.'),
             (env['root'] / 'a_file' / 'sub', f'{env["root"] / "a_file"} is a file, not a folder'),
             (done, f'--out {done} already holds bench.json; choose another path or pass --overwrite.')]
    if cannot_create_in('/sys'):  # a read-only file system, even for root
        cases.append((Path('/sys/qdr_bench'), '--out /sys/qdr_bench: cannot write into /sys ('))
    base = ['bench', '--no-speed', '--data-root', str(env['data']), '--datasets', 'Set12', '--sigmas', '25',
            '--model', f'a={env["root"] / "fp32.onnx"}']
    for out, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli_main([*base, '--out', str(out)])
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_info.value.code == 2 and line.startswith('basicsr bench: ') and message in line, line
    monkeypatch.undo()
    cli_main([*base, '--out', str(done), '--overwrite'])
    assert len(_rows(done)) == 1 and not [p.name for p in done.iterdir() if p.name.startswith('.')]



def test_interleaved_timing_alternates_the_calls_and_counts_every_run() -> None:
    order: list[str] = []
    calls = {name: (lambda n=name: order.append(n)) for name in ('a', 'b')}
    seconds = interleaved_median_seconds(calls, runs=6, warmup=2, rounds=3)
    assert set(seconds) == {'a', 'b'} and all(s >= 0 for s in seconds.values())
    # 2 warm-up calls each, then 3 passes of (1 untimed + 2 timed) calls of a, then of b
    assert order == ['a', 'a', 'b', 'b'] + (['a'] * 3 + ['b'] * 3) * 3
    with pytest.raises(ValueError, match='rounds'):
        interleaved_median_seconds(calls, runs=4, rounds=0)
