"""The pre-flight check of ``basicsr train`` / ``basicsr test`` past the YAML: basicsr's own blocks (``path``,
``val``, ``logger``, ``name``), ``--force_yml`` applied before the check, the images, the network built on the
``meta`` device (DFD layers, ``keep_fp32``, memory) and the archs' own rules. Every case runs the real command
in-process and expects one line, ``basicsr <command>: ...``, last on stderr, exit status 2, nothing started."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from qdr_plugin.archs import EFM
from qdr_plugin.cli import main
from qdr_plugin.options_check import check_options_file
from qdr_plugin.utils.complexity import estimate_training_memory, saved_activation_bytes


def _refusal(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """Run ``basicsr argv``; it must stop with exit status 2 and one line last on stderr (returned), no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err[-2000:]
    assert 'Traceback' not in err, err[-2000:]
    return err.strip().splitlines()[-1]


def _train_refusal(capsys: pytest.CaptureFixture, yml: Path, *extra: str) -> str:
    line = _refusal(capsys, 'train', '-opt', str(yml), *extra)
    assert not Path('experiments', yml.stem).exists(), 'the run started'
    return line


# ------------------------------------------------------------------------------------ defect 5: path, val, logger
@pytest.mark.parametrize(('overrides', 'expected'), [
    ({'path': {'pretrain_netwrok_g': 'net.pth'}},
     "options error at path.pretrain_netwrok_g: unknown key 'pretrain_netwrok_g' (got 'net.pth'). Did you mean "
     "'pretrain_network_g'?"),
    ({'val': {'metrcs': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}},
     "options error at val.metrcs: unknown key 'metrcs'"),
    ({'logger': {'save_checkpoint_freqq': 100}},
     "options error at logger.save_checkpoint_freqq: unknown key 'save_checkpoint_freqq' (got 100). Did you mean "
     "'save_checkpoint_freq'?"),
    ({'val': {'metrics': {'psnr': {'test_y_chanel': True}}}},
     "options error at val.metrics.psnr.test_y_chanel: unknown key 'test_y_chanel' (got True). Did you mean "
     "'test_y_channel'?"),
], ids=['path', 'val', 'logger', 'metric'])
def test_unknown_keys_of_basicsr_blocks_are_refused(write_options, capsys, overrides, expected):
    line = _train_refusal(capsys, write_options('typo', **overrides))
    assert line.startswith(f'basicsr train: {expected}'), line
    assert not Path('net.pth').exists()  # basicsr would have made a folder named like the checkpoint


def test_basicsr_keys_of_those_blocks_pass(write_options):
    path = write_options(
        network_d={'type': 'VGGStyleDiscriminator', 'num_in_ch': 1, 'num_feat': 8},
        path={'param_key_g': 'params', 'ignore_resume_networks': ['network_g'], 'pretrain_network_d': None,
              'strict_load_d': True, 'models': 'anything', 'visualization': 'x'},
        val={'suffix': None, 'pbar': False, 'metrics': {'psnr': {'better': 'higher', 'input_order': 'HWC'}}},
        logger={'use_tb_logger': True, 'wandb': {'project': None, 'resume_id': None}},
    )
    check_options_file(str(path))


# ------------------------------------------------------------------------------------------ defect 10: name
@pytest.mark.parametrize('name', ['../experiments', '.', '..', 'runs/a', 'a\\b', '-x', 'a:b', 'x\ty', ' x'])
def test_a_name_that_is_a_path_is_refused(write_options, workdir, capsys, name):
    Path('experiments/earlier/models').mkdir(parents=True)
    yml = write_options('named')
    options = yaml.safe_load(yml.read_text())
    options['name'] = name
    yml.write_text(yaml.safe_dump(options))
    line = _refusal(capsys, 'train', '-opt', str(yml))
    assert line.startswith('basicsr train: options error at name: '), line
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith('experiments')) == ['experiments']
    assert Path('experiments/earlier/models').is_dir()


# ---------------------------------------------------------------------------------------------- --force_yml
@pytest.mark.parametrize(('entry', 'expected'), [
    ('train:total_iter=0', 'options error at train.fp32_warmup_iter: must be <= train.total_iter (0)'),
    ('datasets:train:batch_size_per_gpu=0', 'options error at datasets.train.batch_size_per_gpu: must be a positive '
     'integer (set by --force_yml datasets:train:batch_size_per_gpu=0) (got 0). Write batch_size_per_gpu: 8.'),
    ('quant:bits=33', 'options error at quant.bits: must be an integer from 2 to 16 (set by --force_yml '
     'quant:bits=33) (got 33).'),
    ('train:totl_iter=5', "options error at --force_yml: 'totl_iter' is not a key of train, basicsr would add it as "
     "a new key (got 'train:totl_iter=5'). Did you mean 'total_iter'?"),
    ('trian:total_iter=5', "options error at --force_yml: the top level has no key 'trian' (got "
     "'trian:total_iter=5'). Did you mean 'train'?"),
    ('train:total_iter', "options error at --force_yml: the entry has no '=' (got 'train:total_iter')."),
    ('train:warmup_iter=-1', "options error at train.warmup_iter: must be an integer (-1: no warm-up) (set by "
     "--force_yml train:warmup_iter=-1) (got '-1'). --force_yml hands '-1' over as a string"),
])
def test_force_yml_is_checked_after_it_is_applied(write_options, capsys, entry, expected):
    line = _train_refusal(capsys, write_options('forced'), '--force_yml', entry)
    assert line.startswith(f'basicsr train: {expected}'), line


def test_force_yml_that_fixes_a_file_passes(write_options):
    path = write_options(train={'total_iter': 0})
    check_options_file(str(path), force_yml=['train:total_iter=3', 'train:optim_g:betas=[0.9,0.99]'])


def test_total_iter_0_needs_a_network_to_start_from(write_options, workdir, capsys):
    yml = write_options('untrained', train={'total_iter': 0, 'fp32_warmup_iter': 0})
    line = _train_refusal(capsys, yml)
    assert 'options error at train.total_iter: is 0 and path.pretrain_network_g is not set' in line
    torch.save({'params': EFM(in_ch=1, width=4, depth=2).state_dict()}, workdir / 'fp32.pth')
    check_options_file(str(write_options('calibrate_only', train={'total_iter': 0, 'fp32_warmup_iter': 0},
                                         path={'pretrain_network_g': 'fp32.pth'})))


# ---------------------------------------------------------------------------------- images, before training
def test_broken_validation_image(write_options, workdir, capsys):
    (workdir / 'images' / 'val' / '009.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')
    line = _train_refusal(capsys, write_options('broken_val'))
    assert line == (f"basicsr train: datasets.val: cannot decode image '{workdir / 'images/val/009.png'}' (empty, "
                    'truncated or not an image); replace or remove the file.'), line


@pytest.mark.parametrize(('overrides', 'expected'), [
    ({'datasets': {'train': {'gt_size': 32}}},
     "options error at datasets.train.gt_size: is larger than image '{train}/000.png' (24x24, HxW), the smallest of "
     'dataroot_gt (got 32). Lower it to at most 24, or remove the smaller images.'),
    ({'quant': {'calib_size': 40}},
     "options error at quant.calib_size: is larger than image '{train}/000.png' (24x24, HxW), the smallest of "
     'dataroot_gt (calibration crops the training images to it) (got 40). Lower it to at most 24, or remove the '
     'smaller images.'),
    ({'val': {'metrics': {'psnr': {'crop_border': '4'}}}},
     "options error at val.metrics.psnr.crop_border: must be an integer >= 0 (got '4'). Write crop_border: 4 "
     'without quotes.'),
], ids=['gt_size', 'calib_size', 'crop_border'])
def test_crops_and_metrics_against_the_images(write_options, workdir, capsys, overrides, expected):
    line = _train_refusal(capsys, write_options('crops', **overrides))
    assert line == f'basicsr train: {expected}'.replace('{train}', str(workdir / 'images' / 'train')), line


def test_lmdb_sizes_come_from_its_meta_info(write_options, workdir, capsys, delete_key):
    lmdb = workdir / 'train.lmdb'
    lmdb.mkdir()
    (lmdb / 'data.mdb').write_bytes(b'')
    (lmdb / 'meta_info.txt').write_text('000.png (24,30,1) 1\n001.png (20,40,1) 1\n')
    yml = write_options('lmdb', datasets={'train': {'dataroot_gt': 'train.lmdb', 'io_backend': {'type': 'lmdb'},
                                                    'gt_size': 22}})
    line = _train_refusal(capsys, yml)
    assert line.startswith(f"basicsr train: options error at datasets.train.gt_size: is larger than image '{lmdb}:001' "
                           '(20x40, HxW), the smallest of dataroot_gt (got 22).'), line


def test_lr_hr_size_mismatch(write_options, workdir, capsys, delete_key):
    lr = workdir / 'images' / 'lr'
    lr.mkdir()
    for i in range(4):
        cv2.imwrite(str(lr / f'{i:03d}.png'), np.zeros((6, 6 if i else 5), np.uint8))
    sr = {'type': 'BicubicSRDataset', 'color': 'gray', 'dataroot_lq': 'images/lr', 'sigma': delete_key,
          'in_ch': delete_key}
    yml = write_options('pairs', scale=4, network_g={'type': 'SRVGGNetCompact', 'num_in_ch': 1, 'num_out_ch': 1,
                                                     'num_feat': 4, 'num_conv': 1, 'upscale': 4, 'in_ch': delete_key,
                                                     'width': delete_key, 'depth': delete_key},
                        datasets={'train': sr}, train={'dfd_opt': delete_key, 'lmr_opt': delete_key})
    line = _train_refusal(capsys, yml)
    assert line.endswith("BicubicSRDataset: LR image '" + str(Path('images/lr/000.png').resolve()) + "' is 6x5 "
                         "(HxW), but HR image '" + str(Path('images/train/000.png').resolve()) + "' is 24x24, which "
                         'needs 6x6 at scale 4; fix the pair (or the scale), or drop dataroot_lq to make the LR by '
                         'resizing.'), line


# -------------------------------------------------------------------------- the network, built on meta
def test_unknown_dfd_layer(write_options, capsys):
    line = _train_refusal(capsys, write_options('layer', train={'dfd_opt': {'layer': 'bottleneck.7'}}))
    assert line == ("basicsr train: options error at train.dfd_opt.layer: EFM has no module named 'bottleneck.7' "
                    "(got 'bottleneck.7'). Did you mean 'bottleneck.1'?"), line


def test_keep_fp32_pattern_that_matches_no_layer(write_options, capsys):
    line = _train_refusal(capsys, write_options('keep', quant={'keep_fp32': ['head', 'tial']}))
    assert line.startswith("basicsr train: options error at quant.keep_fp32: the pattern matches no quantizable "
                           "layer (got 'tial'). Did you mean 'tail'?"), line


@pytest.mark.parametrize(('network', 'expected'), [
    ({'width': 0}, 'options error at network_g.width: must be a positive integer (got 0).'),
    ({'width': -1}, 'options error at network_g.width: must be a positive integer (got -1).'),
    ({'width': 16.5}, 'options error at network_g.width: must be a positive integer (got 16.5).'),
    ({'act': 'gelu'}, "options error at network_g.act: must be one of relu, lrelu (got 'gelu')."),
    ({'out_ch': 3}, 'options error at network_g.out_ch: differs from in_ch (1), but global_residual adds the input'),
    ({'type': 'DnCNN', 'depth': 1, 'width': 4}, 'options error at network_g.depth: must be an integer >= 2 (got 1).'),
], ids=['efm-width-0', 'efm-width-negative', 'efm-width-float', 'efm-act', 'efm-out_ch', 'dncnn-depth'])
def test_network_numbers_out_of_range(write_options, capsys, network, expected):
    line = _train_refusal(capsys, write_options('net', network_g=network))
    assert line.startswith(f'basicsr train: {expected}'), line


def test_adam_betas(write_options, capsys):
    line = _train_refusal(capsys, write_options('betas', train={'optim_g': {'betas': [0.9]}}))
    assert line == ('basicsr train: options error at train.optim_g.betas: must be two numbers in [0, 1): the decay '
                    'rates of the two moments (got [0.9]). Write betas: [0.9, 0.999].'), line


def test_binary_options_file(workdir, capsys):
    (workdir / 'model.yml').write_bytes(b'PK\x03\x04\x00\x00\x08\x00' + bytes(range(256)))
    line = _refusal(capsys, 'train', '-opt', 'model.yml')
    assert line == ("basicsr train: options error at -opt: is a binary file, not an options YAML (got 'model.yml'). "
                    'Give the options .yml file (e.g. options/qdr_denoise.yml), not a checkpoint, image or archive.')


# ------------------------------------------------------------------------------------------ defect 8: memory
def test_a_network_that_cannot_fit_is_refused_before_it_is_built(write_options, capsys):
    yml = write_options('huge', network_g={'width': 32, 'depth': 10})
    line = _train_refusal(capsys, yml)
    assert line.startswith('basicsr train: options error at network_g: training needs about '), line
    assert 'G parameters, QAT batch 2 x 1 x 16 x 16), only ' in line and 'train.memory_check: false' in line
    check_options_file(str(write_options('huge_unchecked', network_g={'width': 32, 'depth': 10},
                                         train={'memory_check': False})))


def test_a_batch_that_cannot_fit_is_refused(write_options, capsys, monkeypatch):
    monkeypatch.setattr('qdr_plugin.network_check.available_memory', lambda: 200 * 2**20)
    line = _train_refusal(capsys, write_options('batch', datasets={'train': {'batch_size_per_gpu': 64}}))
    assert line.startswith('basicsr train: options error at datasets.train.gt_size: training needs about 0.3 GiB of '
                           'memory (EFM, 0.02 M parameters, QAT batch 64 x 1 x 16 x 16), only 0.2 GiB are available '
                           '(got 16).'), line


def test_the_estimate_on_meta_matches_the_real_network():
    """The forward pass on ``meta`` saves exactly the tensors a real one does, and the estimate grows with the
    batch."""
    real = EFM(in_ch=1, width=4, depth=2)
    with torch.device('meta'):
        meta = EFM(in_ch=1, width=4, depth=2)
    assert saved_activation_bytes(meta, torch.zeros(2, 1, 16, 16, device='meta')) == saved_activation_bytes(
        real, torch.zeros(2, 1, 16, 16))
    small, large = (estimate_training_memory(meta, torch.zeros(b, 1, 64, 64, device='meta'), qat=True)
                    for b in (1, 8))
    assert large.total > small.total and large.activations == 8 * small.activations
