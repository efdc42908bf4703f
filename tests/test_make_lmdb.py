"""``tools/make_lmdb.py``: an LMDB read through ``GaussianNoiseDataset`` (``io_backend: {type: lmdb}``) gives the same
tensors as the image folder; clear errors for bad input and existing output."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from qdr_plugin.data.gaussian_noise_dataset import GaussianNoiseDataset

TOOL = Path(__file__).resolve().parents[1] / 'tools' / 'make_lmdb.py'


def _tool():
    spec = importlib.util.spec_from_file_location('make_lmdb_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _images(folder: Path, colour: bool) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    shapes = [(9, 13), (16, 16), (5, 7)]
    for i, shape in enumerate(shapes):
        full = (*shape, 3) if colour else shape
        cv2.imwrite(str(folder / f'img_{i}.png'), rng.integers(0, 256, full, dtype=np.uint8))
    if not colour:  # a 16-bit gray image (kept 16-bit) and a file that is not an image
        cv2.imwrite(str(folder / 'deep.png'), rng.integers(0, 65536, (6, 8), dtype=np.uint16))
        (folder / 'notes.txt').write_text('not an image')
    return folder


def _dataset(root: Path, in_ch: int, lmdb: bool) -> GaussianNoiseDataset:
    opt = {'name': 'x', 'phase': 'val', 'dataroot_gt': str(root), 'in_ch': in_ch, 'sigma': 25}
    if lmdb:
        opt['io_backend'] = {'type': 'lmdb'}
    return GaussianNoiseDataset(opt)


@pytest.mark.parametrize('colour', [False, True], ids=['gray', 'colour'])
def test_lmdb_reads_like_the_folder(tmp_path, colour):
    folder = _images(tmp_path / 'imgs', colour)
    out = tmp_path / 'sub' / 'imgs.lmdb'
    command = [sys.executable, str(TOOL), str(folder), str(out), '--n-thread', '2' if colour else '1']
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'wrote' in result.stdout
    meta = (out / 'meta_info.txt').read_text().splitlines()
    assert len(meta) == (3 if colour else 4)
    if not colour:
        assert 'img_0.png (9,13,1) 1' in meta and 'deep.png (6,8,1) 1' in meta  # gray stays gray
    in_ch = 3 if colour else 1
    from_folder, from_lmdb = _dataset(folder, in_ch, False), _dataset(out, in_ch, True)
    assert len(from_folder) == len(from_lmdb)
    for i in range(len(from_folder)):
        a, b = from_folder[i], from_lmdb[i]
        assert Path(a['gt_path']).stem == b['gt_path']
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])


def test_errors(tmp_path, capsys):
    tool = _tool()
    folder = _images(tmp_path / 'imgs', colour=False)
    out = tmp_path / 'imgs.lmdb'

    for argv, message in [
        ([str(tmp_path / 'missing'), str(out)], 'does not exist'),
        ([str(tmp_path), str(out)], 'holds no images'),
        ([str(folder), str(tmp_path / 'imgs.db')], "must end with '.lmdb'"),
        ([str(folder), str(out), '--compress-level', '12'], '0..9'),
    ]:
        with pytest.raises(SystemExit) as info:
            tool.main(argv)
        assert message in str(info.value), (argv, info.value)
        assert not out.exists()

    tool.main([str(folder), str(out), '--n-thread', '1'])
    with pytest.raises(SystemExit, match='already exists; pass --overwrite'):
        tool.main([str(folder), str(out), '--n-thread', '1'])
    (folder / 'img_3.png').write_bytes((folder / 'img_0.png').read_bytes())
    tool.main([str(folder), str(out), '--n-thread', '1', '--overwrite'])
    assert len((out / 'meta_info.txt').read_text().splitlines()) == 5

    other = tmp_path / 'precious.lmdb'
    other.mkdir()
    (other / 'thesis.tex').write_text('keep me')
    with pytest.raises(SystemExit, match='not an LMDB made by this tool'):
        tool.main([str(folder), str(other), '--overwrite'])
    assert (other / 'thesis.tex').is_file()

    (folder / 'img_0.jpg').write_bytes(b'')  # same key as img_0.png
    with pytest.raises(SystemExit, match="same LMDB key 'img_0'"):
        tool.main([str(folder), str(tmp_path / 'dup.lmdb')])
    (folder / 'img_0.jpg').unlink()
    (folder / 'broken.png').write_bytes(b'not a png')
    with pytest.raises(SystemExit, match='cannot read image'):
        tool.main([str(folder), str(tmp_path / 'broken.lmdb')])
    assert not (tmp_path / 'broken.lmdb').exists()
