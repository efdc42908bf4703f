"""``basicsr bench --task derain | dehaze | lowlight``, options-file datasets, pictures and the retention summary: tiny
real ONNX files (a FP32 and an INT8 export of a tiny RGB EFM) run by ONNX Runtime on tiny image folders laid out as
Rain100H, SOTS-indoor, CBSD68 and LowLight-real."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from basicsr.metrics import calculate_psnr
from conftest import refusal

from qdr_plugin.archs import EFM
from qdr_plugin.cli import main as cli_main
from qdr_plugin.data import SyntheticLowLightDataset
from qdr_plugin.deploy import export_onnx
from qdr_plugin.quant import QuantConfig, calibrate, quantize_model

EFM_RGB = {'type': 'EFM', 'in_ch': 3, 'width': 4, 'depth': 1}


def _texture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth 8-bit BGR image whose three channels differ (so Y and RGB scores differ)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    base = 70 * np.sin(xx / (3 + seed % 4)) * np.cos(yy / (4 + seed % 3))
    img = np.stack([110 + base, 130 - 0.5 * base, 150 + 0.8 * base], axis=-1) + rng.normal(0, 4, (*shape, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


@pytest.fixture(scope='module')
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four set folders under ``data/`` (24x24 images; LowLight-real also one 40x640), an options file with two
    ``datasets:`` blocks, and the FP32 and INT8 ONNX files."""
    root = tmp_path_factory.mktemp('bench_tasks')
    data = root / 'data'
    for i in (1, 2, 10):  # Rain100H: the same names in rainy/ and norain/, blue-white streaks on the rainy copy
        clean = _texture((24, 24), i)
        rainy = clean.astype(np.int32)
        rainy[:, (3 * i) % 7::5] += np.array([60, 40, 30])
        _write(data / 'Rain100H' / 'norain' / f'{i}.png', clean)
        _write(data / 'Rain100H' / 'rainy' / f'{i}.png', np.clip(rainy, 0, 255).astype(np.uint8))
    for scene in (1400, 1401):  # SOTS-indoor: hazy/{scene}_{level}.png with clear/{scene}.png
        clear = _texture((24, 24), scene)
        _write(data / 'SOTS-indoor' / 'clear' / f'{scene}.png', clear)
        for level in (1, 5):
            t = 1 - level / 12
            _write(data / 'SOTS-indoor' / 'hazy' / f'{scene}_{level}.png', (clear * t + 230 * (1 - t)).astype(np.uint8))
    for i in range(2):
        _write(data / 'CBSD68' / f'{i:02d}.png', _texture((24, 24), 20 + i))
    _write(data / 'LowLight-real' / 'a_dark.png', _texture((24, 32), 30) // 6)
    _write(data / 'LowLight-real' / 'b_wide.png', _texture((40, 640), 31) // 5)

    torch.manual_seed(0)
    fp32 = EFM(**{k: v for k, v in EFM_RGB.items() if k != 'type'}).eval()
    with torch.no_grad():  # a small residual: the output stays near the input
        fp32.tail.weight.mul_(0.1)
        fp32.tail.bias.mul_(0.1)
    int8 = quantize_model(copy.deepcopy(fp32), QuantConfig(calibration='max'))
    calibrate(int8, [torch.rand(1, 3, 24, 24) for _ in range(3)], method='max')
    export_onnx(fp32, root / 'fp32.onnx', 3, fp32=True)
    export_onnx(int8.eval(), root / 'int8.onnx', 3, 'onnxruntime')

    sots = {'dataroot_lq': str(data / 'SOTS-indoor' / 'hazy'), 'dataroot_gt': str(data / 'SOTS-indoor' / 'clear'),
            'pairing': {'lq': '{scene}_{level}', 'gt': '{scene}'}}
    options = {
        'network_g': EFM_RGB,
        'datasets': {
            'val': {'name': 'my_pairs', 'type': 'PairedFolderDataset', 'in_ch': 3, **sots},
            'test_1': {'name': 'my_noise', 'type': 'GaussianNoiseDataset', 'in_ch': 3, 'sigma': 15,
                       'dataroot_gt': str(data / 'CBSD68')},
        },
        'val': {'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': True}}},
    }
    (root / 'opt.yml').write_text(yaml.safe_dump(options, sort_keys=False))
    return {'root': root, 'data': data, 'opt': root / 'opt.yml', 'fp32': root / 'fp32.onnx',
            'int8': root / 'int8.onnx'}


def _bench(env: dict[str, Path], out: str, *args: str) -> dict:
    cli_main(['bench', '--data-root', str(env['data']), '--out', str(env['root'] / out), '--no-speed',
              '--threads', '1', '--model', f'fp32={env["fp32"]}', '--model', f'int8={env["int8"]}', *args])
    return json.loads((env['root'] / out / 'bench.json').read_text())


def _restore(model: Path, bgr: np.ndarray) -> np.ndarray:
    """ONNX Runtime's output for an 8-bit BGR image, as the 8-bit BGR image the bench scores."""
    x = (bgr[..., ::-1].astype(np.float32) / 255).transpose(2, 0, 1)[None].copy()
    session = ort.InferenceSession(str(model), providers=['CPUExecutionProvider'])
    y = np.clip(session.run(None, {'input': x})[0][0], 0, 1).transpose(1, 2, 0)[..., ::-1]
    return np.round(y * 255)


def _rows(payload: dict) -> dict[tuple[str, str], dict]:
    return {(row['model'], row['dataset']): row for row in payload['rows']}


def _panels(picture: Path) -> int:
    """The number of image panels side by side in a picture: runs of columns that are not all white below the
    label bars."""
    img = cv2.imread(str(picture))
    filled = (img[24:] != 255).any(axis=(0, 2))
    return int(np.count_nonzero(filled[1:] & ~filled[:-1]) + filled[0])


def test_derain_scores_y_and_dehaze_rgb_with_the_pairing(env: dict[str, Path]) -> None:
    d = env['data']
    derain = _rows(_bench(env, 'derain', '--task', 'derain'))
    row = derain['fp32', 'Rain100H']
    assert (row['scored_on'], row['psnr_against'], row['images']) == ('Y', 'ground truth', 3)
    # name order 1, 10, 2; image 10 by hand: rainy/10.png restored, against norain/10.png, on Y and on RGB
    out = _restore(env['fp32'], cv2.imread(str(d / 'Rain100H' / 'rainy' / '10.png')))
    gt = cv2.imread(str(d / 'Rain100H' / 'norain' / '10.png')).astype(np.float64)
    y_psnr, rgb_psnr = calculate_psnr(out, gt, 0, test_y_channel=True), calculate_psnr(out, gt, 0)
    assert row['psnr_per_image'][1] == pytest.approx(y_psnr, abs=1e-3)
    assert abs(y_psnr - rgb_psnr) > 0.1

    payload = _bench(env, 'dehaze', '--task', 'dehaze', '--max-images', '3')
    row = _rows(payload)['fp32', 'SOTS-indoor']
    assert row['scored_on'] == 'RGB' and row['images'] == 3
    assert payload['datasets']['SOTS-indoor']['images'] == ['1400_1.png', '1400_5.png', '1401_1.png']
    assert '150 of the 500' in payload['datasets']['SOTS-indoor']['note']
    assert '150 of the 500' in (env['root'] / 'dehaze' / 'bench.md').read_text()
    out = _restore(env['fp32'], cv2.imread(str(d / 'SOTS-indoor' / 'hazy' / '1401_1.png')))
    gt = cv2.imread(str(d / 'SOTS-indoor' / 'clear' / '1401.png')).astype(np.float64)  # paired by scene
    rgb_psnr, y_psnr = calculate_psnr(out, gt, 0), calculate_psnr(out, gt, 0, test_y_channel=True)
    assert row['psnr_per_image'][2] == pytest.approx(rgb_psnr, abs=1e-3)
    assert abs(y_psnr - rgb_psnr) > 0.1
    assert (env['root'] / 'dehaze' / 'bench_per_image_diff.png').is_file()


def test_lowlight_synthetic_set_and_real_set_against_the_reference(env: dict[str, Path]) -> None:
    payload = _bench(env, 'lowlight', '--task', 'lowlight')
    rows = _rows(payload)
    synthetic = SyntheticLowLightDataset({'name': 'll', 'phase': 'test', 'dataroot_gt': str(env['data'] / 'CBSD68'),
                                          'in_ch': 3})[1]
    lq = np.round(synthetic['lq'].numpy().transpose(1, 2, 0)[..., ::-1] * 255).astype(np.uint8)
    gt = np.round(synthetic['gt'].numpy().transpose(1, 2, 0)[..., ::-1] * 255)
    assert rows['fp32', 'CBSD68-lowlight']['psnr_per_image'][1] == pytest.approx(
        calculate_psnr(_restore(env['fp32'], lq), gt, 0), abs=1e-3)

    ref, int8 = rows['fp32', 'LowLight-real'], rows['int8', 'LowLight-real']
    assert ref['psnr'] is None and ref['ssim'] is None and ref['retention'] is None
    assert ref['psnr_against'] == int8['psnr_against'] == 'fp32 output'
    assert rows['int8', 'CBSD68-lowlight']['psnr_against'] == 'ground truth'
    dark = cv2.imread(str(env['data'] / 'LowLight-real' / 'b_wide.png'))
    fidelity = calculate_psnr(_restore(env['int8'], dark), _restore(env['fp32'], dark), 0)
    assert int8['psnr_per_image'][1] == pytest.approx(fidelity, abs=1e-3) and int8['retention'] is None
    assert payload['datasets']['LowLight-real']['ground_truth'] is False
    markdown = (env['root'] / 'lowlight' / 'bench.md').read_text()
    assert '| PSNR against |' in markdown and '| fp32 | onnxruntime | fp32 | LowLight-real | RGB | fp32 output | - |' \
        in markdown
    assert (env['root'] / 'lowlight' / 'bench_per_image_diff.png').is_file()

    pictures = env['root'] / 'lowlight' / 'pictures'
    assert _panels(pictures / 'LowLight-real_a_dark.png') == 3  # input, fp32, int8: no ground truth
    assert _panels(pictures / 'CBSD68-lowlight_00.png') == 4  # input, fp32, int8, ground truth
    wide = cv2.imread(str(pictures / 'LowLight-real_b_wide.png'))
    assert wide.shape[0] == 24 + 32 and wide.shape[1] < 3 * 640  # 40x640 shown at 32x512


def test_pictures_are_written_and_guarded_by_overwrite(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    out = env['root'] / 'pictures'
    _bench(env, 'pictures', '--task', 'derain', '--pictures', '2')
    written = sorted(p.name for p in (out / 'pictures').iterdir())
    assert written == ['Rain100H_1.png', 'Rain100H_10.png']
    picture = cv2.imread(str(out / 'pictures' / 'Rain100H_1.png'))
    assert picture.shape[0] == 24 + 24 and _panels(out / 'pictures' / 'Rain100H_1.png') == 4
    for name in ('bench.json', 'bench.csv', 'bench.md', 'bench_per_image_diff.png'):
        (out / name).unlink()
    with pytest.raises(SystemExit) as refused:
        _bench(env, 'pictures', '--task', 'derain', '--pictures', '2')
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert refused.value.code == 2 and f'--out {out} already holds pictures/Rain100H_1.png' in line, line
    _bench(env, 'pictures', '--task', 'derain', '--pictures', '0', '--overwrite')
    assert (out / 'bench.json').is_file()


def test_options_blocks_and_the_retention_summary(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    payload = _bench(env, 'blocks', '--task', 'derain', '-opt', str(env['opt']), '--datasets', 'Rain100H', 'val',
                     'test_1', '--pictures', '1')
    rows = _rows(payload)
    assert sorted({name for _, name in rows}) == ['Rain100H', 'my_noise', 'my_pairs']
    pairs = rows['fp32', 'my_pairs']
    assert pairs['scored_on'] == 'Y, crop 2' and pairs['images'] == 4  # val.metrics.psnr of the options
    out = _restore(env['fp32'], cv2.imread(str(env['data'] / 'SOTS-indoor' / 'hazy' / '1400_5.png')))
    gt = cv2.imread(str(env['data'] / 'SOTS-indoor' / 'clear' / '1400.png')).astype(np.float64)
    assert pairs['psnr_per_image'][1] == pytest.approx(calculate_psnr(out, gt, 2, test_y_channel=True), abs=1e-3)
    assert (env['root'] / 'blocks' / 'pictures' / 'my_pairs_1400_1.png').is_file()

    # the summary by hand: mean of PSNR_int8 / PSNR_fp32 and of the drops over the three sets, and the largest drop
    ratios = {name: rows['int8', name]['psnr'] / rows['fp32', name]['psnr'] for _, name in rows}
    drops = {name: rows['fp32', name]['psnr'] - rows['int8', name]['psnr'] for _, name in rows}
    worst = max(drops, key=drops.get)
    [summary] = payload['summary']
    assert summary['model'] == 'int8' and summary['sets'] == 3
    assert summary['retention'] == pytest.approx(sum(ratios.values()) / 3, abs=1e-5)
    assert summary['mean_drop_db'] == pytest.approx(sum(drops.values()) / 3, abs=1e-4)
    assert summary['max_drop_db'] == pytest.approx(drops[worst], abs=1e-4)
    assert summary['max_drop_on'].startswith(f'{worst}, ')
    printed = capsys.readouterr().out
    assert printed.index('Retention summary against fp32') > printed.index('| my_noise |')
    assert f'| int8 | 3 | {summary["retention"]:.4f} |' in printed


def test_missing_set_folder_names_it_and_data_root(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    message = refusal(['bench', '--task', 'derain', '--data-root', str(env['root'] / 'nowhere'), '--no-speed',
                       '--out', str(env['root'] / 'err1'), '--model', f'a={env["fp32"]}'], capsys)
    assert f'{env["root"] / "nowhere" / "Rain100H"} does not exist' in message and '--data-root' in message


def test_unknown_dataset_lists_sets_and_option_blocks(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    message = refusal(['bench', '--task', 'dehaze', '--data-root', str(env['data']), '-opt', str(env['opt']),
                       '--datasets', 'SOTS', '--no-speed', '--out', str(env['root'] / 'err2'),
                       '--model', f'a={env["fp32"]}'], capsys)
    assert message == ("unknown dataset 'SOTS' for --task dehaze; choose from SOTS-indoor, or name a block of the "
                       "-opt file's datasets: (val, test_1).")


def test_set_without_ground_truth_needs_a_reference(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    message = refusal(['bench', '--task', 'lowlight', '--data-root', str(env['data']), '--datasets', 'LowLight-real',
                       '--no-speed', '--out', str(env['root'] / 'err3'), '--model', f'q={env["int8"]}'], capsys)
    assert message.startswith('LowLight-real has no ground truth') and '--reference NAME' in message
