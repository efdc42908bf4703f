"""Tests of qdr_plugin.data.gaussian_noise_dataset, driven through basicsr's build_dataset / build_dataloader."""

import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.data import build_dataloader, build_dataset
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.registry import DATASET_REGISTRY

from qdr_plugin.data import GaussianNoiseDataset, add_validation_noise

DEMO = Path(__file__).resolve().parents[1] / 'datasets' / 'demo'


def _images(folder: Path, shapes, dtype=np.uint8, names=None, seed: int = 0) -> list:
    """Write random images of the given shapes (HxW gray or HxWx3 BGR) as PNGs; return the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    names = names or [f'im{i:02d}.png' for i in range(len(shapes))]
    imgs = []
    for name, shape in zip(names, shapes):
        img = rng.integers(0, top, shape, dtype=dtype, endpoint=True)
        assert cv2.imwrite(str(folder / name), img)
        imgs.append(img)
    return imgs


def _opt(root, phase='val', **kw) -> dict:
    opt = {'name': 'test', 'type': 'GaussianNoiseDataset', 'phase': phase, 'dataroot_gt': str(root), 'in_ch': 1}
    if phase == 'train':
        opt.update(gt_size=8, use_hflip=True, use_rot=True, num_worker_per_gpu=0, batch_size_per_gpu=2)
    opt.update(kw)
    return {k: v for k, v in opt.items() if v is not None}


def _batches(opt: dict) -> list:
    return list(build_dataloader(build_dataset(opt), opt, num_gpu=1, dist=False, seed=0))


def _image(batch_tensor: torch.Tensor, shape: tuple) -> np.ndarray:
    """First image of a 1 x C x H x W batch as a numpy array of ``shape`` (H x W or H x W x C)."""
    return batch_tensor[0].numpy().transpose(1, 2, 0).reshape(shape)


def _find_window(patch: np.ndarray, imgs: list) -> bool:
    """True if ``patch`` (h x w x c) is a window of one of ``imgs`` (H x W x c)."""
    h, w = patch.shape[:2]
    for img in imgs:
        for top in range(img.shape[0] - h + 1):
            for left in range(img.shape[1] - w + 1):
                if np.array_equal(img[top:top + h, left:left + w], patch):
                    return True
    return False


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)


def test_registered():
    assert DATASET_REGISTRY.get('GaussianNoiseDataset') is GaussianNoiseDataset


def test_train_gray_crop_shape_range_and_noise(tmp_path):
    _images(tmp_path, [(20, 24)] * 4)
    batches = _batches(_opt(tmp_path, 'train', sigma=50, gt_size=16))
    assert len(batches) == 2
    for batch in batches:
        assert batch['gt'].shape == batch['lq'].shape == (2, 1, 16, 16)
        assert batch['gt'].dtype == batch['lq'].dtype == torch.float32
        gt = batch['gt']
        assert 0 <= gt.min() and gt.max() <= 1
        assert torch.equal(torch.round(gt * 255) / 255, gt)  # untouched 8-bit values
        noise = batch['lq'] - gt
        assert abs(noise.std().item() - 50 / 255) < 0.15 * 50 / 255
        assert (batch['lq'] < 0).any() or (batch['lq'] > 1).any()  # no clipping
        assert batch['gt_path'] == batch['lq_path']


def test_train_crop_is_a_window_of_the_image_gray_and_colour(tmp_path):
    gray = _images(tmp_path / 'g', [(12, 14)] * 2)
    colour = _images(tmp_path / 'c', [(12, 14, 3)] * 2, seed=1)
    for root, imgs, in_ch in ((tmp_path / 'g', [g[..., None] for g in gray], 1),
                              (tmp_path / 'c', [c[..., ::-1] for c in colour], 3)):  # expected RGB
        ds = build_dataset(_opt(root, 'train', in_ch=in_ch, sigma=25, gt_size=6, use_hflip=False, use_rot=False))
        for i in range(len(ds)):
            item = ds[i]
            assert item['gt'].shape == (in_ch, 6, 6)
            patch = np.round(item['gt'].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
            assert _find_window(patch, [imgs[i]])


def test_train_sigma_range(tmp_path):
    _images(tmp_path, [(16, 16)] * 8)
    batches = _batches(_opt(tmp_path, 'train', sigma_range=[5, 50], gt_size=16))
    stds = torch.cat([(b['lq'] - b['gt']).flatten(1).std(dim=1) * 255 for b in batches])
    assert stds.min() > 5 * 0.7 and stds.max() < 50 * 1.3
    assert stds.max() - stds.min() > 10  # the level changes per sample

    random.seed(3)
    torch.manual_seed(3)
    first = _batches(_opt(tmp_path, 'train', sigma_range=[5, 50]))
    random.seed(3)
    torch.manual_seed(3)
    second = _batches(_opt(tmp_path, 'train', sigma_range=[5, 50]))
    assert all(torch.equal(a['lq'], b['lq']) for a, b in zip(first, second))

    flat = _batches(_opt(tmp_path, 'train', sigma_range=[0, 0]))
    assert all(torch.equal(b['lq'], b['gt']) for b in flat)


@pytest.mark.parametrize('in_ch', [1, 3])
def test_val_noise_is_the_fixed_protocol(tmp_path, in_ch):
    shape = (9, 11) if in_ch == 1 else (9, 11, 3)
    names = ['b.png', 'a.png', 'c.png']
    imgs = dict(zip(names, _images(tmp_path, [shape] * 3, names=names)))
    opt = _opt(tmp_path, 'val', in_ch=in_ch, sigma=15)
    first, second = _batches(opt), _batches(opt)
    assert [Path(b['gt_path'][0]).name for b in first] == sorted(names)
    for i, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a['lq'], b['lq'])
        img = imgs[Path(a['gt_path'][0]).name]
        img = img[..., ::-1] if in_ch == 3 else img  # RGB
        ref = img.astype(np.float32) / 255
        assert a['gt'].shape == (1, in_ch, 9, 11)  # whole image, no crop
        np.testing.assert_array_equal(_image(a['gt'], ref.shape), ref)
        noise = np.random.default_rng(i).normal(0, 15 / 255, ref.shape)
        expected = (ref.astype(np.float64) + noise).astype(np.float32)
        lq = _image(a['lq'], ref.shape)
        np.testing.assert_array_equal(lq, expected)
        np.testing.assert_array_equal(lq, add_validation_noise(ref, 15, i))
        np.testing.assert_allclose(lq - ref, noise, rtol=0, atol=1e-6)

    shifted = _batches(dict(opt, noise_seed_offset=5))[0]
    shape = ref.shape
    expected = add_validation_noise(_image(shifted['gt'], shape), 15, 5)
    np.testing.assert_array_equal(_image(shifted['lq'], shape), expected)


def test_add_validation_noise():
    img = np.full((4, 5), 0.5, np.float32)
    out = add_validation_noise(img, 25, 7)
    assert out.dtype == np.float32 and out.shape == (4, 5)
    np.testing.assert_array_equal(out, (0.5 + np.random.default_rng(7).normal(0, 25 / 255, (4, 5))).astype(np.float32))
    np.testing.assert_array_equal(add_validation_noise(img, 0, 7), img)
    with pytest.raises(ValueError, match='sigma'):
        add_validation_noise(img, -1, 0)


def test_lmdb_matches_folder(tmp_path):
    folder = tmp_path / 'imgs'
    names = ['x1.png', 'x0.png', 'x2.png']
    _images(folder, [(8, 10, 3), (9, 7, 3), (6, 6, 3)], names=names)
    lmdb_path = str(tmp_path / 'imgs.lmdb')
    make_lmdb_from_imgs(str(folder), lmdb_path, names, [Path(n).stem for n in names], map_size=1 << 20)
    from_folder = _batches(_opt(folder, in_ch=3, sigma=20))
    from_lmdb = _batches(_opt(lmdb_path, in_ch=3, sigma=20, io_backend={'type': 'lmdb'}))
    assert [b['gt_path'][0] for b in from_lmdb] == ['x0', 'x1', 'x2']
    for a, b in zip(from_folder, from_lmdb):
        assert torch.equal(a['gt'], b['gt'])
        assert torch.equal(a['lq'], b['lq'])


@pytest.mark.parametrize(
    ('change', 'error', 'words'),
    [
        ({'dataroot_gt': None}, ValueError, ['dataroot_gt', 'None']),
        ({'dataroot_gt': 'MISSING'}, FileNotFoundError, ['dataroot_gt', 'does not exist']),
        ({'dataroot_gt': 'EMPTY'}, FileNotFoundError, ['dataroot_gt', 'no images']),
        ({'in_ch': 2}, ValueError, ['in_ch', '2']),
        ({'in_ch': True}, ValueError, ['in_ch', 'True']),
        ({'sigma_range': [5, 10]}, ValueError, ['sigma_range', 'sigma', 'only one']),
        ({'sigma': None}, ValueError, ['sigma', 'neither']),
        ({'sigma': -5}, ValueError, ['sigma', '-5']),
        ({'sigma': '25'}, ValueError, ['sigma', "'25'"]),
        ({'sigma': None, 'sigma_range': [50, 10]}, ValueError, ['sigma_range', '[50, 10]']),
        ({'sigma': None, 'sigma_range': [5, 10], 'phase': 'val'}, ValueError, ['sigma_range', 'train']),
        ({'gt_size': None}, ValueError, ['gt_size', 'required', 'got nothing']),
        ({'io_backend': {'type': 'lmdb'}}, FileNotFoundError, ['dataroot_gt', 'meta_info.txt']),
        ({'io_backend': {'type': 'memcached'}}, ValueError, ['io_backend', 'memcached']),
        ({'phase': 'eval'}, ValueError, ['phase', 'eval']),
    ],
)
def test_option_errors(tmp_path, change, error, words):
    _images(tmp_path / 'ok', [(8, 8)])
    (tmp_path / 'EMPTY').mkdir()
    (tmp_path / 'EMPTY' / 'notes.txt').write_text('no images here')
    opt = _opt(tmp_path / 'ok', 'train', sigma=25)
    opt.update(change)
    if opt.get('dataroot_gt') in ('MISSING', 'EMPTY'):
        opt['dataroot_gt'] = str(tmp_path / opt['dataroot_gt'])
    opt = {k: v for k, v in opt.items() if v is not None}
    with pytest.raises(error) as info:
        build_dataset(opt)
    for word in words:
        assert word in str(info.value)


def test_image_smaller_than_gt_size(tmp_path):
    _images(tmp_path, [(20, 24)])
    with pytest.raises(ValueError) as info:
        _batches(_opt(tmp_path, 'train', sigma=25, gt_size=22, batch_size_per_gpu=1))
    message = str(info.value)
    assert 'im00.png' in message and '20x24' in message and 'gt_size 22' in message


@pytest.mark.parametrize('cut', [0, 0.5])
def test_broken_png_names_the_file(tmp_path, cut):
    _images(tmp_path, [(16, 16)])
    path = tmp_path / 'im00.png'
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(ValueError) as info:
        _batches(_opt(tmp_path, sigma=25))
    assert str(path) in str(info.value)


def test_16_bit_png_is_scaled_to_unit_range(tmp_path):
    (img,) = _images(tmp_path, [(6, 7)], dtype=np.uint16)
    img[0, 0], img[0, 1] = 0, 65535
    cv2.imwrite(str(tmp_path / 'im00.png'), img)
    (batch,) = _batches(_opt(tmp_path, sigma=0))
    gt = batch['gt'][0, 0].numpy()
    np.testing.assert_array_equal(gt, img.astype(np.float32) / 65535)
    assert gt.min() == 0 and gt.max() == 1


def test_channel_conversions(tmp_path):
    (colour,) = _images(tmp_path / 'c', [(5, 6, 3)])
    (gray,) = _images(tmp_path / 'g', [(5, 6)])
    (as_gray,) = _batches(_opt(tmp_path / 'c', in_ch=1, sigma=0))
    expected = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
    np.testing.assert_array_equal(as_gray['gt'][0, 0].numpy(), expected)
    (as_colour,) = _batches(_opt(tmp_path / 'g', in_ch=3, sigma=0))
    for c in range(3):
        np.testing.assert_array_equal(as_colour['gt'][0, c].numpy(), gray.astype(np.float32) / 255)


def test_demo_folders():
    train = build_dataset(_opt(DEMO / 'train', 'train', sigma=25, gt_size=64))
    assert len(train) == 24
    item = train[0]
    assert item['gt'].shape == item['lq'].shape == (1, 64, 64)
    val = build_dataset(_opt(DEMO / 'val', sigma=25))
    assert len(val) == 4
    assert [Path(p).name for p in val.paths] == ['01.png', '02.png', '03.png', '04.png']
    assert val[3]['lq'].shape == (1, 256, 256)
