"""``qdr_plugin.options_check``: broken options files fail early with one line naming the key path."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from basicsr.models import build_model
from basicsr.utils.registry import ARCH_REGISTRY

from qdr_plugin.data import BicubicSRDataset, GaussianNoiseDataset
from qdr_plugin.losses import LearnableMagnitudeReweighting
from qdr_plugin.models import QDRModel
from qdr_plugin.options_check import OptionsError, check_options_file
from qdr_plugin.quant import QuantConfig

REPO = Path(__file__).resolve().parents[1]
DELETE = 'DELETE'  # placeholder in the table, swapped for the ``delete_key`` fixture's sentinel


def _swap(value, sentinel):
    if value == DELETE:
        return sentinel
    if isinstance(value, dict):
        return {k: _swap(v, sentinel) for k, v in value.items()}
    return value


BROKEN = [
    ('top-level typo', {'qaunt': {'bits': 8}}, 'qaunt'),
    ('model_type', {'model_type': 'QDRModl'}, 'model_type'),
    ('num_gpu', {'num_gpu': -1}, 'num_gpu'),
    ('arch type', {'network_g': {'type': 'EFN'}}, 'network_g.type'),
    ('arch key', {'network_g': {'widht': 8}}, 'network_g.widht'),
    ('quant key', {'quant': {'bitz': 8}}, 'quant.bitz'),
    ('quant value', {'quant': {'bits': 1}}, 'quant.bits'),
    ('calib_size', {'quant': {'calib_size': 0}}, 'quant.calib_size'),
    ('warm-up > total', {'train': {'fp32_warmup_iter': 4}}, 'train.fp32_warmup_iter'),
    ('total_iter', {'train': {'total_iter': -5}}, 'train.total_iter'),
    ('train typo', {'train': {'dfd_otp': {'type': 'L1Loss'}}}, 'train.dfd_otp'),
    ('dfd key', {'train': {'dfd_opt': {'laeyr': 'bottleneck'}}}, 'train.dfd_opt.laeyr'),
    ('dfd loss type', {'train': {'dfd_opt': {'type': 'L1Los'}}}, 'train.dfd_opt.type'),
    ('dfd loss_weight', {'train': {'dfd_opt': {'loss_weight': -1.0}}}, 'train.dfd_opt.loss_weight'),
    ('dfd reduction', {'train': {'dfd_opt': {'reduction': 'none'}}}, 'train.dfd_opt.reduction'),
    ('dfd layer', {'train': {'dfd_opt': {'layer': 3}}}, 'train.dfd_opt.layer'),
    ('dfd decoder_stages', {'train': {'dfd_opt': {'decoder_stages': 'yes'}}}, 'train.dfd_opt.decoder_stages'),
    ('okd key', {'train': {'output_kd_opt': {'type': 'L1Loss', 'layer': 'x'}}}, 'train.output_kd_opt.layer'),
    ('lmr type', {'train': {'lmr_opt': {'type': 'gradnrom'}}}, 'train.lmr_opt.type'),
    ('lmr bounds', {'train': {'lmr_opt': {'w_min': 10.0, 'w_max': 1.0}}}, 'train.lmr_opt.w_min'),
    ('lmr lr', {'train': {'lmr_opt': {'lr': 0}}}, 'train.lmr_opt.lr'),
    ('lmr without dfd', {'train': {'dfd_opt': DELETE}}, 'train.lmr_opt'),
    ('ema', {'train': {'ema_decay': 0.999}}, 'train.ema_decay'),
    ('optimizer', {'train': {'optim_g': {'type': 'Adamm'}}}, 'train.optim_g.type'),
    ('lr as string', {'train': {'optim_g': {'lr': '1e-3'}}}, 'train.optim_g.lr'),
    ('optimizer key', {'train': {'optim_g': {'betas2': [0.9, 0.99]}}}, 'train.optim_g.betas2'),
    ('scheduler', {'train': {'scheduler': {'type': 'CosineLR'}}}, 'train.scheduler.type'),
    ('milestones', {'train': {'scheduler': {'milestones': DELETE}}}, 'train.scheduler.milestones'),
    ('pixel_opt', {'train': {'pixel_opt': DELETE}}, 'train.pixel_opt'),
    ('dataset type', {'datasets': {'train': {'type': 'GaussianNoiseDatset'}}}, 'datasets.train.type'),
    ('dataset key', {'datasets': {'train': {'gt_szie': 16}}}, 'datasets.train.gt_szie'),
    ('dataroot', {'datasets': {'val': {'dataroot_gt': 'images/nope'}}}, 'datasets.val.dataroot_gt'),
    ('lmdb', {'datasets': {'train': {'io_backend': {'type': 'lmdb'}}}}, 'datasets.train.dataroot_gt'),
    ('gt_size', {'datasets': {'train': {'gt_size': DELETE}}}, 'datasets.train.gt_size'),
    ('batch size', {'datasets': {'train': {'batch_size_per_gpu': 0}}}, 'datasets.train.batch_size_per_gpu'),
    ('in_ch', {'datasets': {'train': {'in_ch': 2}}}, 'datasets.train.in_ch'),
    ('in_ch vs net', {'network_g': {'in_ch': 3}}, 'datasets.train.in_ch'),
    ('sigma and range', {'datasets': {'train': {'sigma_range': [0, 50]}}}, 'datasets.train.sigma_range'),
    ('no sigma', {'datasets': {'val': {'sigma': DELETE}}}, 'datasets.val.sigma'),
    ('val range', {'datasets': {'val': {'sigma': DELETE, 'sigma_range': [0, 50]}}}, 'datasets.val.sigma_range'),
    ('dataset phase', {'datasets': {'valid': {'name': 'v', 'type': 'GaussianNoiseDataset'}}}, 'datasets.valid'),
    ('pretrain', {'path': {'pretrain_network_g': 'missing.pth'}}, 'path.pretrain_network_g'),
    ('resume', {'path': {'resume_state': 'nope/1000.state'}}, 'path.resume_state'),
    ('metric', {'val': {'metrics': {'psnr': {'type': 'calculate_psnrr'}}}}, 'val.metrics.psnr.type'),
    ('metric arg', {'val': {'metrics': {'psnr': {'crop_border': DELETE}}}}, 'val.metrics.psnr.crop_border'),
    ('val_freq', {'val': {'val_freq': 0}}, 'val.val_freq'),
    ('print_freq', {'logger': {'print_freq': 0}}, 'logger.print_freq'),
    ('checkpoint freq', {'logger': {'save_checkpoint_freq': '1000'}}, 'logger.save_checkpoint_freq'),
]


@pytest.mark.parametrize(('overrides', 'key_path'), [case[1:] for case in BROKEN], ids=[case[0] for case in BROKEN])
def test_broken_options_name_the_key(write_options, delete_key, overrides, key_path):
    path = write_options(**_swap(overrides, delete_key))
    with pytest.raises(OptionsError) as info:
        check_options_file(str(path))
    message = str(info.value)
    assert message.startswith(f'options error at {key_path}: '), message
    assert info.value.key_path == key_path
    assert '\n' not in message and '(got ' in message


def test_unknown_key_gets_a_suggestion(write_options):
    path = write_options(train={'dfd_opt': {'laeyr': 'bottleneck'}})
    with pytest.raises(OptionsError, match=r"unknown key 'laeyr' \(got 'bottleneck'\)\. Did you mean 'layer'\?"):
        check_options_file(str(path))


def test_valid_options_pass_and_are_returned(write_options):
    opt = check_options_file(str(write_options()))
    assert opt['model_type'] == 'QDRModel' and opt['train']['dfd_opt']['type'] == 'L1Loss'


def test_valid_variants_pass(write_options, workdir, delete_key):
    lmdb = workdir / 'train.lmdb'
    lmdb.mkdir()
    (lmdb / 'data.mdb').write_bytes(b'')
    (lmdb / 'meta_info.txt').write_text('000.png (24,24,1) 1\n')
    path = write_options(
        datasets={'train': {'dataroot_gt': 'train.lmdb', 'io_backend': {'type': 'lmdb'}, 'sigma': delete_key,
                            'sigma_range': [5, 50]}},
        train={'fp32_warmup_iter': 0, 'total_iter': 1, 'lmr_opt': None, 'output_kd_opt': None,
               'dfd_opt': {'type': 'CharbonnierLoss', 'eps': 1e-6, 'layer': ['bottleneck'], 'decoder_stages': True}},
        my_own_key={'anything': 1},
    )
    check_options_file(str(path))


def test_test_mode_needs_no_train_block(write_options, delete_key):
    path = write_options(train=delete_key, logger=delete_key,
                         datasets={'train': delete_key, 'test': {'name': 't', 'type': 'GaussianNoiseDataset',
                                                                 'dataroot_gt': 'images/val', 'sigma': 15}})
    check_options_file(str(path), is_train=False)
    with pytest.raises(OptionsError, match='options error at datasets.train: '):
        check_options_file(str(path), is_train=True)


def test_duplicate_key_is_refused(workdir):
    text = (REPO / 'options' / 'qdr_denoise.yml').read_text() + '\ntrain:\n  total_iter: 5\n'
    (workdir / 'dup.yml').write_text(text)
    with pytest.raises(OptionsError, match=r'options error at train: appears twice \(lines \d+ and \d+\)'):
        check_options_file('dup.yml')


def test_missing_file_and_bad_yaml(workdir):
    with pytest.raises(OptionsError, match='options error at -opt: options file not found'):
        check_options_file('nope.yml')
    (workdir / 'bad.yml').write_text('name: x\n  model_type: [\n')
    with pytest.raises(OptionsError, match='not valid YAML at line'):
        check_options_file('bad.yml')


def test_cli_style_check_is_fast_and_names_the_key(write_options, workdir):
    write_options('x', train={'dfd_opt': {'laeyr': 'bottleneck'}})
    code = "from qdr_plugin.options_check import check_options_file; check_options_file('x.yml')"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, '-c', code], cwd=workdir, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert result.returncode != 0
    assert 'OptionsError: options error at train.dfd_opt.laeyr:' in result.stderr, result.stderr
    assert elapsed < 20, f'check took {elapsed:.1f} s'


def test_repo_default_options_pass(monkeypatch):
    monkeypatch.chdir(REPO)
    opt = check_options_file('options/qdr_denoise.yml')
    assert opt['name'] == 'qdr_denoise_demo'
    assert yaml.safe_load((REPO / 'options' / 'qdr_denoise.yml').read_text())['model_type'] == opt['model_type']


def _spy(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[OptionsError]:
    """Wrap the rule ``owner.<name>``; returns the list of the OptionsErrors it raises, in order."""
    raised = []
    rule = getattr(owner, name)

    def spy(*args, **kwargs):
        try:
            return rule(*args, **kwargs)
        except OptionsError as err:
            raised.append(err)
            raise

    monkeypatch.setattr(owner, name, staticmethod(spy))
    return raised


def _gaussian_train(**kw) -> dict:
    return {'name': 'd', 'type': 'GaussianNoiseDataset', 'phase': 'train', 'dataroot_gt': 'images/train',
            'gt_size': 16, **kw}


def _bicubic_train(**kw) -> dict:
    return {'name': 'd', 'type': 'BicubicSRDataset', 'phase': 'train', 'scale': 4, 'dataroot_gt': 'images/train',
            'gt_size': 16, **kw}


SAME_RULE = [
    ('quant bits', {'quant': {'bits': 1}}, (QuantConfig, 'check_options'),
     lambda opt: QuantConfig.from_options({'bits': 1})),
    ('sigma_range backwards', {'datasets': {'train': {'sigma': DELETE, 'sigma_range': [50, 10]}}},
     (GaussianNoiseDataset, 'check_options'), lambda opt: GaussianNoiseDataset(_gaussian_train(sigma_range=[50, 10]))),
    ('sigma as a string', {'datasets': {'train': {'sigma': '25'}}}, (GaussianNoiseDataset, 'check_options'),
     lambda opt: GaussianNoiseDataset(_gaussian_train(sigma='25'))),
    ('sr colour', {'scale': 4, 'datasets': {'train': {'type': 'BicubicSRDataset', 'color': 'ycbcr', 'sigma': DELETE,
                                                      'in_ch': DELETE}}},
     (BicubicSRDataset, 'check_options'), lambda opt: BicubicSRDataset(_bicubic_train(color='ycbcr'))),
    ('sr gt_size', {'scale': 4, 'datasets': {'train': {'type': 'BicubicSRDataset', 'gt_size': 18, 'sigma': DELETE,
                                                       'in_ch': DELETE}}},
     (BicubicSRDataset, 'check_options'), lambda opt: BicubicSRDataset(_bicubic_train(gt_size=18))),
    ('lmr bounds', {'train': {'lmr_opt': {'w_min': 10.0, 'w_max': 1.0}}},
     (LearnableMagnitudeReweighting, 'check_options'),
     lambda opt: LearnableMagnitudeReweighting(w_min=10.0, w_max=1.0)),
    ('warm-up > total', {'train': {'fp32_warmup_iter': 4}}, (QDRModel, 'check_train_options'), build_model),
]


@pytest.mark.parametrize(('overrides', 'rule', 'construct'), [case[1:] for case in SAME_RULE],
                         ids=[case[0] for case in SAME_RULE])
def test_checker_and_constructor_share_the_rule(write_options, delete_key, parse_yml, monkeypatch, overrides, rule,
                                                construct):
    """The pre-flight check and the class that reads the block refuse a bad value with the same problem and fix,
    raised by the same rule function (the one living with the class)."""
    path = write_options(**_swap(overrides, delete_key))
    opt = parse_yml(path, is_train=True)
    raised = _spy(monkeypatch, *rule)
    with pytest.raises(OptionsError) as from_checker:
        check_options_file(str(path))
    with pytest.raises(OptionsError) as from_constructor:
        construct(opt)
    checker, constructor = from_checker.value, from_constructor.value
    assert len(raised) == 2 and raised[0] is checker and raised[1] is constructor
    assert (checker.problem, checker.fix, checker.value) == (constructor.problem, constructor.fix, constructor.value)
    assert checker.key_path.rsplit('.', 1)[-1] == constructor.key_path.rsplit('.', 1)[-1]
    assert isinstance(constructor, ValueError)


SHIPPED = sorted((REPO / 'options').rglob('*.yml'))


@pytest.mark.parametrize('path', SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_options_file_passes_the_check(path, monkeypatch, tmp_path):
    """A typo in a shipped recipe would otherwise only show when someone starts hours of training with it. A
    recipe whose ``pretrain_network_g`` an earlier recipe makes is checked with a freshly initialised checkpoint of
    its network there."""
    monkeypatch.chdir(REPO)
    text = path.read_text()
    if '../shared/' in text and not (REPO.parent / 'shared').is_dir():
        pytest.skip('needs ../shared beside the repository')
    options = yaml.safe_load(text)
    pretrained = (options.get('path') or {}).get('pretrain_network_g')
    if pretrained and not (REPO / pretrained).is_file():
        network = dict(options['network_g'])
        net = ARCH_REGISTRY.get(network.pop('type'))(**network)
        torch.save({'params': net.state_dict()}, tmp_path / 'pretrained.pth')
        options['path']['pretrain_network_g'] = str(tmp_path / 'pretrained.pth')
        path = tmp_path / path.name
        path.write_text(yaml.safe_dump(options, sort_keys=False))
    for is_train in (True, False) if 'val' in options else (True,):  # without val:, a training-only recipe
        opt = check_options_file(str(path), is_train=is_train)
        assert opt['name'] == options['name']
