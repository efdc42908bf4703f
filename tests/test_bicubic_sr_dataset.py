"""Tests of qdr_plugin.data.bicubic_sr_dataset (HR images, LR made with MATLAB bicubic) and its options checks."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.data import build_dataloader, build_dataset
from basicsr.utils.color_util import rgb2ycbcr
from basicsr.utils.lmdb_util import make_lmdb_from_imgs
from basicsr.utils.matlab_functions import imresize
from basicsr.utils.registry import DATASET_REGISTRY

from qdr_plugin.data import BicubicSRDataset, bicubic_downscale
from qdr_plugin.options_check import OptionsError, check_options_file

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared' / 'datasets'
DEMO_OPTIONS = ['sr/qdr_edsr_small_x4', 'sr/qdr_srvgg_x4', 'sr/qdr_swinir_light_x2', 'sr/qdr_rcan_small_x2',
                'qdr_ridnet_sigma25']


def _images(folder: Path, shapes, names=None, seed: int = 0) -> list[np.ndarray]:
    """Write smooth random BGR (HxWx3) or gray (HxW) 8-bit PNGs; return them as RGB / gray float32 in [0, 1]."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = names or [f'im{i:02d}.png' for i in range(len(shapes))]
    imgs = []
    for name, shape in zip(names, shapes):
        img = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (3, 3), 0)
        assert cv2.imwrite(str(folder / name), img)
        rgb = img[..., ::-1] if img.ndim == 3 else img[..., None]
        imgs.append(rgb.astype(np.float32) / 255)
    return imgs


def _opt(root, phase='val', scale=4, **kw) -> dict:
    opt = {'name': 'test', 'type': 'BicubicSRDataset', 'phase': phase, 'dataroot_gt': str(root), 'scale': scale}
    if phase == 'train':
        opt.update(gt_size=4 * scale, use_hflip=False, use_rot=False, num_worker_per_gpu=0, batch_size_per_gpu=1)
    opt.update(kw)
    return {k: v for k, v in opt.items() if v is not None}


def _hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.numpy().transpose(1, 2, 0)


def _window(patch: np.ndarray, img: np.ndarray) -> tuple[int, int] | None:
    """(top, left) of ``patch`` inside ``img``, or None."""
    h, w = patch.shape[:2]
    for top in range(img.shape[0] - h + 1):
        for left in range(img.shape[1] - w + 1):
            if np.array_equal(img[top:top + h, left:left + w], patch):
                return top, left
    return None


def test_registered():
    assert DATASET_REGISTRY.get('BicubicSRDataset') is BicubicSRDataset


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_train_lr_is_bicubic_of_the_hr_crop(tmp_path, scale):
    (img,) = _images(tmp_path, [(30, 33, 3)])
    dataset = build_dataset(_opt(tmp_path, 'train', scale))
    for _ in range(3):
        item = dataset[0]
        gt, lq = _hwc(item['gt']), _hwc(item['lq'])
        assert gt.shape == (4 * scale, 4 * scale, 3) and lq.shape == (4, 4, 3)
        assert _window(gt, img) is not None
        expected = np.round(np.clip(imresize(gt, 1 / scale), 0, 1) * 255) / 255
        np.testing.assert_allclose(lq, expected, rtol=0, atol=1e-6)
        assert item['lq_path'] == item['gt_path'] == str(tmp_path / 'im00.png')


def test_train_batches_with_flips(tmp_path):
    _images(tmp_path, [(24, 24, 3), (20, 28, 3)])
    opt = _opt(tmp_path, 'train', 2, gt_size=12, use_hflip=True, use_rot=True, batch_size_per_gpu=2)
    (batch,) = list(build_dataloader(build_dataset(opt), opt, num_gpu=1, dist=False, seed=0))
    assert batch['gt'].shape == (2, 3, 12, 12) and batch['lq'].shape == (2, 3, 6, 6)
    for gt, lq in zip(batch['gt'], batch['lq']):
        np.testing.assert_allclose(_hwc(lq), bicubic_downscale(_hwc(gt), 2), rtol=0, atol=1e-6)


def test_val_mod_crops_the_whole_image(tmp_path):
    (img,) = _images(tmp_path, [(21, 26, 3)])
    item = build_dataset(_opt(tmp_path, 'val', 4))[0]
    gt, lq = _hwc(item['gt']), _hwc(item['lq'])
    np.testing.assert_array_equal(gt, img[:20, :24])
    assert lq.shape == (5, 6, 3)
    np.testing.assert_array_equal(lq, bicubic_downscale(img[:20, :24], 4))


def test_dataroot_lq_is_read_instead_of_resizing(tmp_path):
    (hr,) = _images(tmp_path / 'HR', [(26, 33, 3)], names=['baby.png'])
    (lr,) = _images(tmp_path / 'LR', [(6, 8, 3)], names=['babyx4.png'], seed=1)
    opt = _opt(tmp_path / 'HR', 'val', 4, dataroot_lq=str(tmp_path / 'LR'), filename_tmpl='{}x4')
    item = build_dataset(opt)[0]
    np.testing.assert_array_equal(_hwc(item['lq']), lr)
    np.testing.assert_array_equal(_hwc(item['gt']), hr[:24, :32])
    assert item['lq_path'] == str(tmp_path / 'LR' / 'babyx4.png')

    train = build_dataset({**opt, 'phase': 'train', 'gt_size': 8})
    for _ in range(4):
        item = train[0]
        gt, lq = _hwc(item['gt']), _hwc(item['lq'])
        assert gt.shape == (8, 8, 3) and lq.shape == (2, 2, 3)
        top, left = _window(gt, hr)
        np.testing.assert_array_equal(lq, lr[top // 4:top // 4 + 2, left // 4:left // 4 + 2])

    with pytest.raises(FileNotFoundError, match=r"no LR image 'baby'.*set filename_tmpl: '\{\}x4'"):
        build_dataset({**opt, 'filename_tmpl': '{}'})
    _images(tmp_path / 'LR_bad', [(5, 8, 3)], names=['baby.png'])
    with pytest.raises(ValueError, match=r"LR image .*baby.png' is 5x8 .* needs 6x8 at scale 4"):
        build_dataset({**opt, 'dataroot_lq': str(tmp_path / 'LR_bad'), 'filename_tmpl': '{}'})[0]


def test_lmdb_reads_like_the_folder(tmp_path):
    names = ['b.png', 'a.png']
    _images(tmp_path / 'HR', [(16, 20, 3), (12, 12, 3)], names=names)
    lmdb_path = str(tmp_path / 'hr.lmdb')
    make_lmdb_from_imgs(str(tmp_path / 'HR'), lmdb_path, names, [Path(n).stem for n in names], map_size=1 << 20)
    from_folder = build_dataset(_opt(tmp_path / 'HR', 'val', 2))
    from_lmdb = build_dataset(_opt(lmdb_path, 'val', 2, io_backend={'type': 'lmdb'}))
    assert [from_lmdb[i]['gt_path'] for i in range(2)] == ['a', 'b']
    for i in range(2):
        assert torch.equal(from_folder[i]['gt'], from_lmdb[i]['gt'])
        assert torch.equal(from_folder[i]['lq'], from_lmdb[i]['lq'])


def test_color_modes(tmp_path):
    (img,) = _images(tmp_path, [(16, 16, 3)])
    rgb = build_dataset(_opt(tmp_path, 'val', 2))[0]
    y = build_dataset(_opt(tmp_path, 'val', 2, color='y'))[0]
    gray = build_dataset(_opt(tmp_path, 'val', 2, color='gray'))[0]
    assert y['gt'].shape == gray['gt'].shape == (1, 16, 16) and y['lq'].shape == gray['lq'].shape == (1, 8, 8)
    for key in ('gt', 'lq'):
        np.testing.assert_allclose(_hwc(y[key])[..., 0], rgb2ycbcr(_hwc(rgb[key]), y_only=True), atol=1e-6)
    expected_gray = cv2.cvtColor((img[..., ::-1] * 255).round().astype(np.uint8), cv2.COLOR_BGR2GRAY) / 255
    np.testing.assert_allclose(gray['gt'][0].numpy(), expected_gray, atol=1e-6)


def test_meta_info_file_joins_folders(tmp_path):
    _images(tmp_path / 'root' / 'A', [(8, 8, 3)], names=['x.png'])
    _images(tmp_path / 'root' / 'B', [(10, 10, 3)], names=['y.tif'])
    meta = tmp_path / 'meta.txt'
    meta.write_text('B/y.tif\n\nA/x.png (8,8,3)\n')
    dataset = build_dataset(_opt(tmp_path / 'root', 'val', 2, meta_info_file=str(meta)))
    assert [dataset[i]['gt'].shape[-1] for i in range(len(dataset))] == [10, 8]
    meta.write_text('A/x.png\nA/missing.png\n')
    with pytest.raises(FileNotFoundError, match="meta_info_file: lists 'A/missing.png', which is not in dataroot_gt"):
        build_dataset(_opt(tmp_path / 'root', 'val', 2, meta_info_file=str(meta)))


@pytest.mark.parametrize(
    ('change', 'error', 'words'),
    [
        ({'dataroot_gt': 'MISSING'}, FileNotFoundError, ['dataroot_gt', 'MISSING', 'does not exist']),
        ({'dataroot_gt': 'EMPTY'}, FileNotFoundError, ['dataroot_gt', 'EMPTY', 'holds no images']),
        ({'gt_size': 18}, ValueError, ['gt_size', 'multiple of scale 4', '18']),
        ({'scale': 5}, ValueError, ['scale', '2, 3, 4, 8', 'got 5']),
        ({'scale': None}, ValueError, ['scale', 'required', 'got nothing']),
        ({'color': 'ycbcr'}, ValueError, ['color', 'ycbcr']),
        ({'filename_tmpl': 'x4', 'dataroot_lq': 'ok'}, ValueError, ['filename_tmpl', "'x4'"]),
    ],
)
def test_option_errors(tmp_path, change, error, words):
    _images(tmp_path / 'ok', [(24, 24, 3)])
    (tmp_path / 'EMPTY').mkdir()
    (tmp_path / 'EMPTY' / 'notes.txt').write_text('no images here')
    opt = _opt(tmp_path / 'ok', 'train', 4)
    opt.update(change)
    for key in ('dataroot_gt', 'dataroot_lq'):
        if opt.get(key) in ('MISSING', 'EMPTY', 'ok'):
            opt[key] = str(tmp_path / opt[key])
    with pytest.raises(error) as info:
        build_dataset({k: v for k, v in opt.items() if v is not None})
    for word in words:
        assert word in str(info.value)


def test_read_errors_name_the_file(tmp_path):
    _images(tmp_path / 'small', [(20, 30, 3)])
    with pytest.raises(ValueError, match=r"im00.png' is 20x30 \(HxW\), smaller than gt_size 24x24"):
        build_dataset(_opt(tmp_path / 'small', 'train', 4, gt_size=24))[0]
    _images(tmp_path / 'broken', [(16, 16, 3)])
    path = tmp_path / 'broken' / 'im00.png'
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match=f"cannot decode image '{path}'"):
        build_dataset(_opt(tmp_path / 'broken', 'val', 4))[0]


@pytest.mark.parametrize('name', DEMO_OPTIONS)
def test_demo_options_pass_the_checker(monkeypatch, name):
    monkeypatch.chdir(REPO)
    opt = check_options_file(f'options/{name}.yml')
    assert opt['model_type'] == 'QDRModel'


@pytest.mark.skipif(not SHARED.is_dir(), reason='needs ../shared/datasets')
@pytest.mark.parametrize('name', [f'{name}_full' for name in DEMO_OPTIONS])
def test_full_options_pass_the_checker(monkeypatch, name):
    monkeypatch.chdir(REPO)
    check_options_file(f'options/{name}.yml')


@pytest.mark.parametrize(
    ('edit', 'key_path'),
    [
        (lambda o: o['datasets']['train'].update(gt_size=90), 'datasets.train.gt_size'),
        (lambda o: o.update(scale=2), 'scale'),  # against network_g.upscale: 4
        (lambda o: o.update(scale=5), 'scale'),
        (lambda o: o.pop('scale'), 'scale'),
        (lambda o: o['datasets']['val'].update(color='y'), 'datasets.val.color'),
        (lambda o: o['datasets']['val'].update(dataroot_lq='nope'), 'datasets.val.dataroot_lq'),
        (lambda o: o['datasets']['train'].update(meta_info_file='nope.txt'), 'datasets.train.meta_info_file'),
        (lambda o: o['datasets']['train'].update(gt_szie=96), 'datasets.train.gt_szie'),
    ],
)
def test_checker_names_the_sr_dataset_key(tmp_path, monkeypatch, edit, key_path):
    opt = yaml.safe_load((REPO / 'options' / 'sr' / 'qdr_edsr_small_x4.yml').read_text())
    edit(opt)
    for dataset in opt['datasets'].values():
        dataset['dataroot_gt'] = str(REPO / dataset['dataroot_gt'])
    path = tmp_path / 'x.yml'
    path.write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OptionsError, match=f'^options error at {key_path}: '):
        check_options_file(str(path))
