"""The datasets of the restoration tasks: paired folders with a pairing rule, and rain / haze / low light made on
the fly from clean images."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from qdr_plugin.data import (
    PairedFolderDataset,
    SyntheticHazeDataset,
    SyntheticLowLightDataset,
    SyntheticRainDataset,
    add_haze,
    darken,
)
from qdr_plugin.errors import UserError
from qdr_plugin.option_rules import OptionsError, OptionsPathError
from qdr_plugin.options_check import check_options_file

SYNTHETIC = (SyntheticRainDataset, SyntheticHazeDataset, SyntheticLowLightDataset)


def _colour(folder: Path, names: list[str], size: tuple[int, int] = (20, 28), seed: int = 0) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for name in names:
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / name), img)
        images.append(img)
    return images


@pytest.fixture
def sots(tmp_path: Path) -> Path:
    """A SOTS-like layout: hazy/{scene}_{level}.png, clear/{scene}.png."""
    _colour(tmp_path / 'hazy', ['1400_1.png', '1400_9.png', '1401_5.png'], seed=1)
    _colour(tmp_path / 'clear', ['1400.png', '1401.png'], seed=2)
    return tmp_path


def _paired(root: Path, **extra) -> dict:
    return {'name': 'pairs', 'phase': 'val', 'dataroot_lq': str(root / 'hazy'), 'dataroot_gt': str(root / 'clear'),
            'pairing': {'lq': '{scene}_{level}', 'gt': '{scene}'}, **extra}


def test_pairing_rule_names_the_ground_truth_of_each_input(sots):
    data = PairedFolderDataset(_paired(sots))
    assert [Path(p).name for p in data.paths] == ['1400_1.png', '1400_9.png', '1401_5.png']
    assert [Path(p).name for p in data.gt_paths] == ['1400.png', '1400.png', '1401.png']
    item = data[2]
    clear = cv2.cvtColor(cv2.imread(str(sots / 'clear' / '1401.png')), cv2.COLOR_BGR2RGB)
    assert torch.equal(item['gt'], torch.from_numpy(clear.transpose(2, 0, 1).astype(np.float32) / 255))
    assert item['lq'].shape == (3, 20, 28) and Path(item['gt_path']).name == '1401.png'


def test_without_a_rule_equal_names_pair(tmp_path):
    _colour(tmp_path / 'rainy', ['1.png', '2.png'])
    _colour(tmp_path / 'norain', ['1.png', '2.png', '3.png'], seed=3)
    data = PairedFolderDataset({'phase': 'test', 'dataroot_lq': str(tmp_path / 'rainy'),
                                'dataroot_gt': str(tmp_path / 'norain')})
    assert [Path(p).name for p in data.gt_paths] == ['1.png', '2.png']


@pytest.mark.parametrize(('pairing', 'key', 'words'), [
    ({'lq': '{scene}-{level}', 'gt': '{scene}'}, 'pairing.lq', "does not match input"),
    ({'lq': '{scene}_{level}', 'gt': '{scene}_gt'}, 'pairing.gt', "gives '1400_gt'"),
    ({'lq': '{scene}_{level}', 'gt': '{room}'}, 'pairing.gt', 'uses {room}, which the lq pattern does not define'),
    ({'lq': 'hazy', 'gt': '{scene}'}, 'pairing.lq', 'needs at least one {field}'),
    ({'lq': '{scene}_{level}'}, 'pairing.gt', 'must be a file-stem pattern'),
    ({'lq': '{scene}_{level}', 'gt': '{scene}', 'gtt': 1}, 'pairing.gtt', 'unknown key'),
])
def test_a_broken_pairing_rule_is_named(sots, pairing, key, words):
    with pytest.raises(OptionsError) as error:
        PairedFolderDataset({**_paired(sots), 'pairing': pairing})
    assert error.value.key_path == f'PairedFolderDataset.{key}' and words in str(error.value)


def test_a_missing_ground_truth_is_a_missing_path(sots):
    (sots / 'clear' / '1401.png').unlink()
    with pytest.raises(OptionsPathError, match="gives '1401' for input .*1401_5.png"):
        PairedFolderDataset(_paired(sots))


def test_training_crops_both_images_at_the_same_place(tmp_path):
    gt = _colour(tmp_path / 'gt', ['a.png'], size=(40, 48))[0]
    (tmp_path / 'lq').mkdir()
    cv2.imwrite(str(tmp_path / 'lq' / 'a.png'), 255 - gt)
    data = PairedFolderDataset({'phase': 'train', 'dataroot_lq': str(tmp_path / 'lq'),
                                'dataroot_gt': str(tmp_path / 'gt'), 'gt_size': 16, 'use_hflip': True,
                                'use_rot': True})
    for _ in range(5):
        item = data[0]
        assert item['lq'].shape == (3, 16, 16)
        assert torch.allclose(item['lq'], 1 - item['gt'], atol=1e-6)


def test_a_pair_of_different_sizes_is_refused_naming_both(tmp_path):
    _colour(tmp_path / 'lq', ['a.png'], size=(20, 28))
    _colour(tmp_path / 'gt', ['a.png'], size=(20, 24))
    opt = {'phase': 'val', 'dataroot_lq': str(tmp_path / 'lq'), 'dataroot_gt': str(tmp_path / 'gt')}
    with pytest.raises(UserError, match=r"input '.*lq/a.png' is 20x28 .* ground truth '.*gt/a.png' is 20x24"):
        PairedFolderDataset(opt)[0]
    with pytest.raises(UserError, match='a pair must have the same size'):
        PairedFolderDataset.check_images(opt)


@pytest.mark.parametrize('cls', SYNTHETIC)
def test_test_images_are_degraded_the_same_every_time(cls, tmp_path):
    _colour(tmp_path / 'clean', ['a.png', 'b.png'], size=(24, 32))
    opt = {'phase': 'test', 'dataroot_gt': str(tmp_path / 'clean')}
    first, again = cls(dict(opt)), cls(dict(opt))
    item = first[0]
    assert item['lq'].shape == item['gt'].shape == (3, 24, 32) and item['lq'].dtype == torch.float32
    assert 0 <= float(item['lq'].min()) and float(item['lq'].max()) <= 1
    assert not torch.equal(item['lq'], item['gt'])
    assert torch.equal(item['lq'], again[0]['lq'])
    shifted = cls({**opt, 'seed_offset': 1})
    assert not torch.equal(shifted[0]['lq'], item['lq'])
    assert torch.equal(shifted[0]['gt'], item['gt'])


@pytest.mark.parametrize('cls', SYNTHETIC)
def test_training_draws_a_new_degradation_per_sample_from_the_seeded_rng(cls, tmp_path):
    _colour(tmp_path / 'clean', ['a.png'], size=(24, 32))
    data = cls({'phase': 'train', 'dataroot_gt': str(tmp_path / 'clean'), 'gt_size': 16})
    random.seed(0), torch.manual_seed(0)  # basicsr seeds both (crop position, degradation)
    first = data[0]
    random.seed(0), torch.manual_seed(0)
    again = data[0]
    assert torch.equal(first['lq'], again['lq']) and first['lq'].shape == (3, 16, 16)
    assert not torch.equal(data[0]['lq'], first['lq'])


def test_rain_only_brightens():
    clean = np.full((40, 40, 3), 0.3, np.float32)
    rainy = SyntheticRainDataset.degrade(clean, np.random.default_rng(0), **SyntheticRainDataset.check_parameters(
        {}, 'rain'))
    assert (rainy >= clean).all() and (rainy > clean + 0.05).mean() > 0.01
    assert np.allclose(rainy[..., 0], rainy[..., 2])  # achromatic streaks


def test_haze_follows_the_scattering_model():
    clean = np.random.default_rng(0).random((12, 16, 3)).astype(np.float32)
    hazy = add_haze(clean, np.random.default_rng(0), beta=(1.0, 1.0), airlight=(0.8, 0.8), depth_near=(1.0, 1.0))
    t = np.exp(-1.0)  # depth 1 everywhere
    assert np.allclose(hazy, clean * t + 0.8 * (1 - t), atol=1e-6)


def test_low_light_is_exposure_in_linear_light_back_to_8_bit():
    clean = np.random.default_rng(0).random((12, 16, 3)).astype(np.float32)
    dark = darken(clean, np.random.default_rng(0), gamma=(2.0, 2.0), exposure=(0.25, 0.25),
                  shot_noise=(1e-8, 1e-8))
    assert np.allclose(dark, np.round(255 * 0.5 * clean) / 255, atol=1.5 / 255)
    assert np.allclose(dark * 255, np.round(dark * 255), atol=1e-4)  # 8-bit levels


@pytest.mark.parametrize(('cls', 'key', 'value', 'words'), [
    (SyntheticHazeDataset, 'beta', [1.8, 0.6], 'must be [lo, hi] with 0 <= lo <= hi <= 10'),
    (SyntheticRainDataset, 'streak_density', 0.01, 'must be [lo, hi]'),
    (SyntheticLowLightDataset, 'exposure', [0, 0.2], 'must be [lo, hi] with 0.0001 <= lo'),
])
def test_a_bad_degradation_range_is_named(cls, key, value, words, tmp_path):
    _colour(tmp_path / 'clean', ['a.png'])
    with pytest.raises(OptionsError) as error:
        cls({'phase': 'test', 'dataroot_gt': str(tmp_path / 'clean'), key: value})
    assert error.value.key_path == f'{cls.__name__}.{key}' and words in str(error.value)


def test_a_misspelt_degradation_key_is_named_with_the_fix(tmp_path):
    _colour(tmp_path / 'clean', ['a.png'])
    with pytest.raises(OptionsError, match="Did you mean 'airlight'"):
        SyntheticHazeDataset({'phase': 'test', 'dataroot_gt': str(tmp_path / 'clean'), 'airlite': [0.7, 1]})


def test_preflight_names_a_missing_ground_truth_before_training(write_options, delete_key, sots):
    val = {key: value for key, value in _paired(sots).items() if key != 'phase'}
    yml = write_options('pairs', network_g={'in_ch': 3},
                        datasets={'train': {'type': 'SyntheticHazeDataset', 'dataroot_gt': str(sots / 'clear'),
                                            'in_ch': 3, 'sigma': delete_key},
                                  'val': {**val, 'type': 'PairedFolderDataset', 'in_ch': 3, 'sigma': delete_key}})
    assert check_options_file(str(yml), is_train=True)['name'] == 'pairs'
    (sots / 'clear' / '1401.png').unlink()
    with pytest.raises(OptionsPathError) as error:
        check_options_file(str(yml), is_train=True)
    assert error.value.key_path == 'datasets.val.pairing.gt'


@pytest.mark.usefixtures('one_thread')
def test_basicsr_trains_on_synthetic_rain_and_validates_on_pairs(write_options, delete_key, workdir):
    _colour(workdir / 'rain' / 'rainy', ['1.png', '2.png'], seed=4)
    _colour(workdir / 'rain' / 'norain', ['1.png', '2.png'], seed=5)
    yml = write_options('derain', network_g={'in_ch': 3},
                        datasets={'train': {'type': 'SyntheticRainDataset', 'in_ch': 3, 'sigma': delete_key},
                                  'val': {'type': 'PairedFolderDataset', 'dataroot_lq': 'rain/rainy',
                                          'dataroot_gt': 'rain/norain', 'in_ch': 3, 'sigma': delete_key}},
                        val={'metrics': {'psnr': {'test_y_channel': True}}})
    result = subprocess.run([sys.executable, '-m', 'qdr_plugin', 'train', '-opt', str(yml)], cwd=workdir,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    log = next((workdir / 'experiments' / 'derain').glob('train_derain_*.log')).read_text()
    assert '# psnr:' in log and '# psnr_fp32:' in log
