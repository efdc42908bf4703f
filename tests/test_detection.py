"""Downstream detection: FastestDet decoding, COCO mAP against pseudo-labels (pycocotools), and ``basicsr bench
--detect`` end to end with real ONNX files run by ONNX Runtime: a tiny detector in FastestDet's output format
(objectness from the brightness of 16x16 cells, class from the dominant colour) on Rain100H-style folders of coloured
squares whose "degraded" copies have red and blue swapped; an FP32 restorer that swaps them back, and the INT8 export
of a tiny EFM that leaves them as they are. The published FastestDet runs too when ../shared is present."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import refusal
from torch import nn
from torch.nn import functional as F

from qdr_plugin.archs import EFM
from qdr_plugin.cli import main as cli_main
from qdr_plugin.deploy import export_onnx
from qdr_plugin.detection import Detections, FastestDet, bootstrap_map50, coco_map, decode_fastestdet
from qdr_plugin.errors import UserError
from qdr_plugin.quant import QuantConfig, calibrate, quantize_model

SHARED_DETECTOR = Path(__file__).resolve().parents[2] / 'shared' / 'weights' / 'FastestDet' / 'FastestDet.onnx'
CLASSES = ('red', 'green', 'blue')


class BrightCells(nn.Module):
    """A FastestDet-format detector for tests: 22 x 22 cells of 16 x 16 input pixels; objectness
    ``sigmoid(40 (brightest channel - 0.45))``, boxes centred on the cell, 0.1 of the image wide and high, class
    probabilities ``softmax(10 * mean colour)`` over R, G, B (the input is BGR)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cells = F.avg_pool2d(x, 16)
        brightness = cells.amax(dim=1, keepdim=True)
        zero = brightness * 0
        terms = torch.cat([zero, zero, zero - 2.2, zero - 2.2], dim=1)
        rgb = cells.flip(1)
        return torch.cat([torch.sigmoid(40 * (brightness - 0.45)), terms, torch.softmax(10 * rgb, dim=1)], dim=1)


def _squares(seed: int, size: int = 64) -> np.ndarray:
    """A dark 8-bit BGR image with three bright coloured squares."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 20, np.uint8)
    for colour in ((40, 40, 250), (40, 250, 40), (250, 60, 60)):
        x, y = rng.integers(0, size - 18, 2)
        img[y:y + 18, x:x + 18] = colour
    return img


@pytest.fixture(scope='module')
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Rain100H-, Set12- and LowLight-real-style folders, the tiny detector with its names, the FP32 red-blue swap
    and the INT8 export of a tiny RGB EFM whose output stays near its input."""
    root = tmp_path_factory.mktemp('detect')
    data = root / 'data'
    for i in range(6):
        clean = _squares(i)
        for folder, img in (('norain', clean), ('rainy', clean[..., ::-1])):  # red and blue swapped
            (data / 'Rain100H' / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(data / 'Rain100H' / folder / f'{i}.png'), img)
    (data / 'Set12').mkdir(parents=True)
    cv2.imwrite(str(data / 'Set12' / '01.png'), _squares(9)[..., 0])
    (data / 'LowLight-real').mkdir(parents=True)
    cv2.imwrite(str(data / 'LowLight-real' / 'a.png'), _squares(10) // 4)

    detector = root / 'bright.onnx'
    torch.onnx.export(BrightCells().eval(), torch.rand(1, 3, 352, 352), str(detector), input_names=['images'],
                      opset_version=17, dynamo=False)
    (root / 'bright.names').write_text('\n'.join(CLASSES) + '\n')

    swap = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        swap.weight.copy_(torch.eye(3).flip(0)[:, :, None, None])
    export_onnx(swap.eval(), root / 'fp32.onnx', 3, fp32=True)
    torch.manual_seed(0)
    efm = EFM(in_ch=3, width=4, depth=1).eval()
    with torch.no_grad():  # a small residual: the output stays near the input
        efm.tail.weight.mul_(0.05)
        efm.tail.bias.mul_(0.05)
    int8 = quantize_model(copy.deepcopy(efm), QuantConfig(calibration='max'))
    calibrate(int8, [torch.rand(1, 3, 32, 32) for _ in range(3)], method='max')
    export_onnx(int8.eval(), root / 'int8.onnx', 3, 'onnxruntime')
    return {'root': root, 'data': data, 'detector': detector, 'names': root / 'bright.names',
            'fp32': root / 'fp32.onnx', 'int8': root / 'int8.onnx'}


def _bench_argv(env: dict[str, Path], out: str, *args: str) -> list[str]:
    return ['bench', '--data-root', str(env['data']), '--out', str(env['root'] / out), '--no-speed', '--threads', '1',
            '--model', f'fp32={env["fp32"]}', '--model', f'int8={env["int8"]}', '--detect', str(env['detector']),
            '--detect-names', str(env['names']), *args]


def _one(box: tuple[float, float, float, float], score: float = 0.9, label: int = 0) -> Detections:
    return Detections(np.array([box], np.float32), np.array([score], np.float32), np.array([label]))


def _join(*parts: Detections) -> Detections:
    order = np.argsort(-np.concatenate([p.scores for p in parts]), kind='stable')
    return Detections(*(np.concatenate([getattr(p, f) for p in parts])[order] for f in ('boxes', 'scores', 'classes')))


def test_decoding_follows_the_fastestdet_formulas() -> None:
    output = np.zeros((5 + 3, 4, 4), np.float32)
    output[5:] = 1 / 3  # uniform classes: score = o^0.6 (1/3)^0.4
    output[0] = 0.01
    output[0, 1, 2] = 0.9  # row 1, column 2
    output[1:5, 1, 2] = [0.5, -0.25, 0.0, np.log(0.2 / 0.8)]  # tanh offsets; w = 0.5, h = 0.2
    output[5:, 1, 2] = [0.1, 0.7, 0.2]
    found = decode_fastestdet(output)
    assert len(found) == 1 and found.classes[0] == 1
    cx, cy = (np.tanh(0.5) + 2) / 4, (np.tanh(-0.25) + 1) / 4
    np.testing.assert_allclose(found.boxes[0], [cx - 0.25, cy - 0.1, cx + 0.25, cy + 0.1], atol=1e-6)
    assert found.scores[0] == pytest.approx(0.9 ** 0.6 * 0.7 ** 0.4, rel=1e-6)


def test_nms_is_per_class_and_keeps_the_higher_score() -> None:
    output = np.zeros((5 + 2, 2, 2), np.float32)
    output[5] = 1.0
    output[0, 0, 0], output[0, 0, 1] = 0.9, 0.8  # neighbours with boxes of the whole image: IoU 1 with each other
    output[3:5] = 10.0
    assert len(decode_fastestdet(output)) == 1 and decode_fastestdet(output).scores[0] == pytest.approx(0.9 ** 0.6)
    output[5:, 0, 1] = [0.0, 1.0]  # the second one of another class: both stay
    assert sorted(decode_fastestdet(output).classes.tolist()) == [0, 1]


def test_coco_map_against_pseudo_labels() -> None:
    sizes = [(100, 80), (60, 60)]
    labels = [_join(_one((0.1, 0.1, 0.4, 0.5)), _one((0.5, 0.5, 0.9, 0.9), 0.8, 2)), _one((0.2, 0.2, 0.6, 0.7))]
    perfect = coco_map(labels, labels, sizes, 3)
    assert (perfect.map50, perfect.map) == (100.0, 100.0)
    extra = [_join(labels[0], _one((0.0, 0.6, 0.2, 0.9), 0.1, 1)), _join(labels[1], _one((0.7, 0.0, 1.0, 0.3), 0.2))]
    assert coco_map(labels, extra, sizes, 3).map50 == 100.0  # lower-scored extra boxes rank after every label
    shifted = [Detections(d.boxes + shift, d.scores, d.classes) for d, shift in zip(labels, (0.04, 0.3))]
    scores = coco_map(labels, shifted, sizes, 3)
    assert 0 < scores.map < scores.map50 < 100
    empty = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert coco_map(labels, [empty, empty], sizes, 3).map50 == 0.0
    assert coco_map([empty, empty], labels, sizes, 3).map50 is None
    with pytest.raises(ValueError, match='one of each per image'):
        coco_map(labels, labels[:1], sizes, 3)


def test_bootstrap_draws_are_shared_by_the_versions() -> None:
    sizes = [(50, 50)] * 4
    labels = [_one((0.1 * i, 0.1, 0.1 * i + 0.3, 0.5)) for i in range(4)]
    missed = [labels[0], labels[1], labels[2], _one((0.6, 0.6, 0.9, 0.9))]
    draws = bootstrap_map50(labels, {'same': labels, 'missed': missed}, sizes, 1, resamples=20, seed=3)
    assert draws['same'].shape == (20,) and (draws['same'] == 100).all()
    assert (draws['missed'] <= 100).all() and draws['missed'].min() < 100 and np.nanstd(draws['missed']) > 0
    again = bootstrap_map50(labels, {'missed': missed}, sizes, 1, resamples=20, seed=3)
    np.testing.assert_array_equal(again['missed'], draws['missed'])


def test_detector_contract_is_checked_on_load(env: dict[str, Path], tmp_path: Path) -> None:
    detector = FastestDet(env['detector'], env['names'])
    assert detector.size == 352 and detector.names == list(CLASSES)
    found = detector(_squares(0))
    assert len(found) and set(found.above(0.5).classes.tolist()) == {0, 1, 2}
    with pytest.raises(UserError, match='not 1 x 3 x S x S'):
        FastestDet(env['fp32'], env['names'])  # a restorer: its input is not 1 x 3 x S x S
    (tmp_path / 'two.names').write_text('a\nb\n')
    with pytest.raises(UserError, match='as many as the class names'):
        FastestDet(env['detector'], tmp_path / 'two.names')
    with pytest.raises(UserError, match='does not exist'):
        FastestDet(tmp_path / 'missing.onnx')
    with pytest.raises(UserError, match='class names file'):
        FastestDet(env['detector'], tmp_path / 'missing.names')


@pytest.mark.skipif(not SHARED_DETECTOR.is_file(), reason='../shared/weights/FastestDet is not present')
def test_published_fastestdet_finds_the_people_of_cbsd68() -> None:
    image = cv2.imread(str(SHARED_DETECTOR.parents[2] / 'datasets' / 'CBSD68' / '101085.png'))
    detector = FastestDet(SHARED_DETECTOR)
    assert len(detector.names) == 80
    found = detector(image).above(0.5)
    assert len(found) >= 3 and {detector.names[c] for c in found.classes} == {'person'}


def test_bench_detect_writes_the_table_and_the_pictures(env: dict[str, Path]) -> None:
    cli_main(_bench_argv(env, 'derain', '--task', 'derain', '--min-boxes', '5', '--bootstrap', '4',
                         '--pictures', '2'))
    out = env['root'] / 'derain'
    payload = json.loads((out / 'detect.json').read_text())
    rows = {row['version']: row for row in payload['rows']}
    assert list(rows) == ['clean', 'degraded', 'fp32', 'int8']
    assert rows['clean']['map50'] == rows['clean']['map'] == 100.0
    assert rows['fp32']['map50'] == 100.0  # the swap back restores every pseudo-label
    assert rows['degraded']['map50'] == pytest.approx(100 / 3, abs=0.01)  # green alone is found
    assert rows['int8']['map50_std'] > 0 and rows['int8']['gain50_std'] > 0
    summary = payload['sets'][0]
    assert summary['set'] == 'Rain100H' and summary['stable'] and summary['pseudo_boxes'] >= 5
    assert summary['classes'] == sorted(CLASSES) and rows['clean']['boxes'] == summary['pseudo_boxes']
    ref_gain = rows['fp32']['map50'] - rows['degraded']['map50']
    for name in ('fp32', 'int8'):
        assert rows[name]['gain50'] == pytest.approx(rows[name]['map50'] - rows['degraded']['map50'], abs=0.02)
        assert rows[name]['gain_kept'] == pytest.approx(rows[name]['gain50'] / ref_gain, abs=2e-3)
    assert rows['fp32']['gain_kept'] == 1.0 and abs(rows['int8']['gain_kept']) < 0.1  # the EFM does not swap
    assert 'pseudo-labels' in (out / 'detect.md').read_text().lower()
    pictures = sorted(p.name for p in (out / 'detect_pictures').iterdir())
    assert pictures == ['Rain100H_0.jpg', 'Rain100H_1.jpg']
    assert cv2.imread(str(out / 'detect_pictures' / 'Rain100H_0.jpg')).shape[1] > 4 * 64  # four panels
    assert (out / 'bench.json').is_file()  # the PSNR table is written beside it


def test_a_set_with_too_few_pseudo_boxes_gets_no_number(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    cli_main(_bench_argv(env, 'few', '--task', 'derain', '--max-images', '2', '--min-boxes', '100000',
                         '--bootstrap', '0', '--pictures', '0'))
    payload = json.loads((env['root'] / 'few' / 'detect.json').read_text())
    assert all(row['map50'] is None and row['gain_kept'] is None for row in payload['rows'])
    assert not payload['sets'][0]['stable']
    assert 'too few pseudo-boxes for a stable mAP' in capsys.readouterr().out


@pytest.mark.parametrize(('args', 'expected'), [
    (['--task', 'lowlight', '--datasets', 'LowLight-real'], 'has no clean images to take pseudo-labels from'),
    (['--task', 'derain', '--label-score', '1.5'], '--label-score must be in (0, 1]'),
    (['--task', 'derain', '--bootstrap', '-1'], '--bootstrap must be >= 0'),
])
def test_bench_detect_refusals(env: dict[str, Path], capsys: pytest.CaptureFixture, args: list[str],
                               expected: str) -> None:
    assert expected in refusal(_bench_argv(env, 'refused', *args), capsys)


def test_bench_detect_refuses_gray_sets_and_reserved_names(env: dict[str, Path], capsys: pytest.CaptureFixture,
                                                          tmp_path: Path) -> None:
    gray = torch.nn.Conv2d(1, 1, 3, padding=1)
    export_onnx(gray.eval(), tmp_path / 'gray.onnx', 1, fp32=True)
    argv = ['bench', '--data-root', str(env['data']), '--out', str(tmp_path / 'o'), '--no-speed', '--task', 'denoise',
            '--datasets', 'Set12', '--sigmas', '25', '--model', f'g={tmp_path / "gray.onnx"}', '--detect',
            str(env['detector']), '--detect-names', str(env['names'])]
    assert 'is gray and the detector takes RGB images' in refusal(argv, capsys)
    argv = _bench_argv(env, 'named', '--task', 'derain')
    argv[argv.index(f'int8={env["int8"]}')] = f'clean={env["int8"]}'
    assert '"clean" and "degraded" name the clean and degraded images' in refusal(argv, capsys)
