"""``basicsr infer`` and qdr_plugin.deploy.infer: image I/O, tiling, folder restoration, ONNX vs checkpoint."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import qdr_plugin  # noqa: F401  (registers the plugin)
from qdr_plugin.archs import EFM
from qdr_plugin.cli import main as cli_main
from qdr_plugin.deploy import export_onnx
from qdr_plugin.deploy.infer import read_image, restore_folder, tile_restore, torch_restorer, write_image


def _conv_restorer(scale: int):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 3, 3, padding=1)  # receptive-field radius 1
    restore = torch_restorer(conv)
    if scale == 1:
        return restore
    return lambda x: np.repeat(np.repeat(restore(x), scale, axis=2), scale, axis=3)


@pytest.mark.parametrize('scale', [1, 2])
def test_tiled_equals_whole_image(scale: int) -> None:
    img = np.random.default_rng(0).random((1, 3, 37, 53), dtype=np.float32)
    restore = _conv_restorer(scale)
    whole = tile_restore(restore, img, None, 0, scale)
    assert whole.shape == (1, 3, 37 * scale, 53 * scale)
    np.testing.assert_array_equal(tile_restore(restore, img, 16, 2, scale), whole)
    np.testing.assert_array_equal(tile_restore(restore, img, 64, 2, scale), whole)  # one tile
    assert np.abs(tile_restore(restore, img, 16, 0, scale) - whole).max() > 0  # no context: seams


def _write_folder(folder: Path) -> dict[str, np.ndarray]:
    """Gray PNG, colour JPEG, 16-bit colour TIFF, colour BMP, plus broken files; returns the expected RGB floats."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    bgr16 = rng.integers(0, 65536, (9, 11, 3), dtype=np.uint16)
    bgr8 = np.zeros((8, 8, 3), np.uint8)
    bgr8[..., 2] = 255  # pure red in cv2's BGR order
    cv2.imwrite(str(folder / 'a_gray.png'), gray)
    cv2.imwrite(str(folder / 'b_red.JPG'), bgr8, [cv2.IMWRITE_JPEG_QUALITY, 100])
    cv2.imwrite(str(folder / 'c_deep.tif'), bgr16)
    cv2.imwrite(str(folder / 'd_red.bmp'), bgr8)
    png = cv2.imencode('.png', rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))[1].tobytes()
    (folder / 'e_truncated.png').write_bytes(png[: len(png) // 2])
    (folder / 'x.png').write_text('not an image')
    (folder / 'notes.txt').write_text('ignored')
    return {
        'a_gray': np.repeat(gray[..., None], 3, axis=2) / 255.0,
        'c_deep': bgr16[..., ::-1] / 65535.0,
        'd_red': bgr8[..., ::-1] / 255.0,
    }


def test_read_image_formats_and_errors(tmp_path: Path) -> None:
    expected = _write_folder(tmp_path / 'in')
    folder = tmp_path / 'in'
    for stem, suffix in [('a_gray', '.png'), ('c_deep', '.tif'), ('d_red', '.bmp')]:
        rgb = read_image(folder / f'{stem}{suffix}', 3)
        assert rgb.dtype == np.float32 and rgb.shape == expected[stem].shape
        np.testing.assert_allclose(rgb, expected[stem], atol=1e-6)
    jpeg = read_image(folder / 'b_red.JPG', 3)
    assert jpeg[..., 0].min() > 0.9 and jpeg[..., 1:].max() < 0.1  # RGB order
    gray = read_image(folder / 'd_red.bmp', 1)
    assert gray.shape == (8, 8, 1)
    np.testing.assert_allclose(gray, 0.299, atol=2e-3)  # BGR2GRAY weight of red
    assert read_image(folder / 'a_gray.png', 1).shape == (12, 10, 1)
    for name in ['e_truncated.png', 'x.png', 'missing.png']:
        with pytest.raises(ValueError, match=name):
            read_image(folder / name, 3)
    jpg = (folder / 'b_red.JPG').read_bytes()
    (folder / 'truncated.jpg').write_bytes(jpg[: len(jpg) // 2])  # cv2 alone decodes this silently
    with pytest.raises(ValueError, match='truncated.jpg'):
        read_image(folder / 'truncated.jpg', 3)


@pytest.mark.parametrize('channels', [1, 3])
def test_restore_folder_skips_unreadable(tmp_path: Path, channels: int, capsys: pytest.CaptureFixture) -> None:
    _write_folder(tmp_path / 'in')
    written, failed = restore_folder(lambda x: 1.0 - x, tmp_path / 'in', tmp_path / 'out', channels, 8, 2)
    assert [p.name for p in written] == ['a_gray.png', 'b_red.png', 'c_deep.png', 'd_red.png']
    assert [p.name for p, _ in failed] == ['e_truncated.png', 'x.png']
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith('skipped ')]
    assert len(skipped) == 2 and 'e_truncated.png' in skipped[0] and 'x.png' in skipped[1]
    out = cv2.imread(str(tmp_path / 'out' / 'd_red.png'), cv2.IMREAD_UNCHANGED)
    if channels == 3:
        assert out.shape == (8, 8, 3) and (out[..., 2] == 0).all() and (out[..., :2] == 255).all()  # 1 - red = cyan
    else:
        assert out.shape == (8, 8) and abs(int(out[0, 0]) - round(255 * (1 - 0.299))) <= 1
    with pytest.raises(FileNotFoundError, match='does not exist'):
        restore_folder(lambda x: x, tmp_path / 'nope', tmp_path / 'out', channels, None, 0)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no images'):
        restore_folder(lambda x: x, tmp_path / 'empty', tmp_path / 'out', channels, None, 0)


def test_write_image_round_trip(tmp_path: Path) -> None:
    img = np.random.default_rng(2).random((5, 7, 3), dtype=np.float32)
    write_image(tmp_path / 'o.png', img)
    np.testing.assert_allclose(read_image(tmp_path / 'o.png', 3), img, atol=0.5 / 255 + 1e-6)


def test_cli_ckpt_and_onnx_agree(workdir: Path, write_options, capsys: pytest.CaptureFixture) -> None:
    network = {'type': 'EFM', 'in_ch': 1, 'width': 8, 'depth': 1}
    opt = write_options('infer', network_g=network)
    torch.manual_seed(0)
    net = EFM(in_ch=1, width=8, depth=1).eval()
    torch.save({'params': net.state_dict()}, workdir / 'net.pth')
    export_onnx(net, workdir / 'net.onnx', 1, fp32=True)
    (workdir / 'images' / 'val' / 'x.png').write_text('not an image')
    common = ['-opt', str(opt), '-i', 'images/val']

    cli_main(['infer', *common, '--ckpt', 'net.pth', '-o', 'out_ckpt'])
    assert 'restored 2 images to out_ckpt (1 skipped)' in capsys.readouterr().out
    cli_main(['infer', *common, '--onnx', 'net.onnx', '-o', 'out_onnx', '--threads', '1'])
    assert 'restored 2 images to out_onnx (1 skipped)' in capsys.readouterr().out
    cli_main(['infer', *common, '--onnx', 'net.onnx', '-o', 'out_tiled', '--tile', '12', '--tile-pad', '4'])
    for name in ['000.png', '001.png']:
        a = cv2.imread(str(workdir / 'out_ckpt' / name), cv2.IMREAD_UNCHANGED).astype(int)
        b = cv2.imread(str(workdir / 'out_onnx' / name), cv2.IMREAD_UNCHANGED).astype(int)
        assert a.shape == (20, 28) and np.abs(a - b).max() <= 1  # within 1/255
        assert cv2.imread(str(workdir / 'out_tiled' / name), cv2.IMREAD_UNCHANGED).shape == (20, 28)


def test_cli_errors(workdir: Path, write_options, capsys: pytest.CaptureFixture) -> None:
    opt = str(write_options('infer', network_g={'type': 'EFM', 'in_ch': 1, 'width': 4, 'depth': 1}))
    (workdir / 'bad').mkdir()
    (workdir / 'bad' / 'x.png').write_text('not an image')
    torch.save({'params': EFM(in_ch=1, width=4, depth=1).state_dict()}, workdir / 'net.pth')
    cases = [
        (['--ckpt', 'net.pth', '-i', 'bad', '-o', 'out'], 'none of the 1 images'),
        (['--ckpt', 'net.pth', '-i', 'nope', '-o', 'out'], 'input folder nope does not exist'),
        (['--ckpt', 'missing.pth', '-i', 'images/val', '-o', 'out'], '--ckpt missing.pth does not exist'),
        (['--onnx', 'missing.onnx', '-i', 'images/val', '-o', 'out'], 'missing.onnx does not exist'),
        (['--ckpt', 'net.pth', '-i', 'images/val', '-o', 'images/val'], 'is the input folder'),
        (['--ckpt', 'net.pth', '-i', 'images/val', '-o', 'out', '--tile', '0'], '--tile must be a positive number'),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli_main(['infer', '-opt', opt, *extra])
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_info.value.code == 2 and line.startswith('basicsr infer: ') and message in line, line
    with pytest.raises(SystemExit) as exit_info:  # exactly one of --ckpt / --onnx
        cli_main(['infer', '-opt', opt, '--ckpt', 'net.pth', '--onnx', 'x.onnx', '-i', 'images/val', '-o', 'out'])
    assert exit_info.value.code == 2
