"""QDRModel through basicsr's real training loop (``basicsr train``), one short run per ablation switch."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from basicsr.models import build_model
from basicsr.utils.options import parse_options
from conftest import forget_basicsr_logger, refusal

from qdr_plugin.cli import main
from qdr_plugin.errors import UserError
from qdr_plugin.quant import QuantConv2d, is_quantized, is_quantized_state_dict

ABLATIONS = {
    'plain_qat': {'train': {'dfd_opt': None, 'lmr_opt': None}},
    'output_kd': {'train': {'dfd_opt': None, 'lmr_opt': None, 'output_kd_opt': {'type': 'L1Loss'}}},
    'decoder_kd': {'train': {'lmr_opt': None, 'dfd_opt': {'type': 'MSELoss', 'decoder_stages': True}}},
    'qdr_fixed': {'train': {'lmr_opt': None}},
    'qdr_lmr': {},
    'qdr_lmr_uncertainty': {'train': {'lmr_opt': {'type': 'uncertainty'}}},
    'qdr_no_warmup_4bit': {'quant': {'bits': 4, 'calibration': 'mse'}, 'train': {'fp32_warmup_iter': 0}},
    'qdr_asymmetric': {'quant': {'act_symmetric': False, 'calibration': 'max'}},
}


def _train(yml: Path) -> Path:
    main(['train', '-opt', str(yml)])
    return Path('experiments') / yml.stem / 'models'


def _parse(yml: Path, is_train: bool, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(sys, 'argv', ['basicsr', '-opt', str(yml)])
    opt, _ = parse_options(str(yml.parent), is_train=is_train)
    return opt


@pytest.mark.parametrize('variant', sorted(ABLATIONS))
def test_three_iterations_per_ablation(variant, write_options, delete_key):
    overrides = copy.deepcopy(ABLATIONS[variant])
    train = overrides.get('train', {})
    has_lmr = train.get('lmr_opt', 'default') is not None
    warmup = train.get('fp32_warmup_iter', 1) > 0
    for key, value in train.items():
        if value is None:
            train[key] = delete_key
    models = _train(write_options(variant, **overrides))
    checkpoint = torch.load(models / 'net_g_latest.pth', weights_only=True)
    assert is_quantized_state_dict(checkpoint['params'])
    assert not is_quantized_state_dict(checkpoint['params_teacher'])
    assert ('params_lmr' in checkpoint) == has_lmr
    assert (models / 'net_g_best.pth').is_file()
    if warmup:
        fp32 = torch.load(models / 'net_g_fp32.pth', weights_only=True)['params']
        teacher = checkpoint['params_teacher']
        assert all(torch.equal(fp32[k], teacher[k]) for k in fp32)  # the teacher is the frozen FP32 snapshot


def test_checkpoint_reloads_into_identical_quantized_network(write_options, monkeypatch):
    yml = write_options('reload')
    _train(yml)
    ckpt = Path('experiments/reload/models/net_g_latest.pth').resolve()
    test_yml = write_options('reload_test', path={'pretrain_network_g': str(ckpt)})
    model = build_model(_parse(test_yml, False, monkeypatch))
    net = model.net_g
    assert is_quantized(net) and any(isinstance(m, QuantConv2d) for m in net.modules())
    saved = torch.load(ckpt, weights_only=True)['params']
    reloaded = net.state_dict()
    assert saved.keys() == reloaded.keys()
    assert all(torch.equal(saved[k], reloaded[k]) for k in saved)

    second = build_model(_parse(test_yml, False, monkeypatch)).net_g
    x = torch.rand(1, 1, 21, 30)
    net.eval()
    second.eval()
    with torch.no_grad():
        assert torch.equal(net(x), second(x))


def test_calib_size_sets_the_side_of_the_calibration_crops(write_options, monkeypatch):
    opt = _parse(write_options('calib', quant={'calib_size': 20}), True, monkeypatch)
    model = build_model(opt)
    batches = list(model._calibration_batches())
    assert len(batches) == 2 and all(b.shape[-2:] == (20, 20) for b in batches)  # training crops are 16x16
    assert opt['datasets']['train']['gt_size'] == 16  # the training set itself is left as it was


def test_qat_checkpoint_continues_training_with_its_teacher(write_options, delete_key):
    _train(write_options('first'))
    ckpt = str(Path('experiments/first/models/net_g_latest.pth').resolve())
    models = _train(write_options('second', path={'pretrain_network_g': ckpt}, train={'fp32_warmup_iter': 0}))
    first = torch.load(ckpt, weights_only=True)
    second = torch.load(models / 'net_g_latest.pth', weights_only=True)
    assert all(torch.equal(first['params_teacher'][k], second['params_teacher'][k]) for k in first['params_teacher'])
    assert not is_quantized_state_dict(second['params_teacher'])  # the teacher stays a plain FP32 network


def test_non_finite_loss_stops_with_clear_message(write_options, monkeypatch):
    opt = _parse(write_options('nan', train={'fp32_warmup_iter': 0}), True, monkeypatch)
    Path(opt['path']['models']).mkdir(parents=True)
    model = build_model(opt)
    lq = torch.rand(2, 1, 16, 16)
    lq[0, 0, 3, 3] = float('nan')  # a corrupt input poisons the loss
    model.feed_data({'lq': lq, 'gt': torch.rand(2, 1, 16, 16)})
    with pytest.raises(UserError, match='not finite at iter 7.*resume with --auto_resume'):
        model.optimize_parameters(7)
    assert not list(Path(opt['path']['models']).glob('*.pth'))


def test_non_finite_weights_are_not_saved(write_options, monkeypatch):
    opt = _parse(write_options('nan_weights', train={'fp32_warmup_iter': 0}), True, monkeypatch)
    models = Path(opt['path']['models'])
    models.mkdir(parents=True)
    model = build_model(opt)
    with torch.no_grad():
        next(model.net_g.parameters()).view(-1)[0] = float('inf')
    with pytest.raises(UserError, match=r'not finite \(params\.\S+ holds NaN or inf\), so net_g_5.pth is not written'):
        model.save(0, 5)
    assert not list(models.iterdir())


def test_options_are_checked_before_training(write_options, capsys):
    yml = write_options('badlr', train={'optim_g': {'lr': float('inf')}})
    assert 'train.optim_g.lr' in refusal(['train', '-opt', str(yml)], capsys)
    assert not Path('experiments/badlr').exists()


def test_dfd_layer_must_exist(write_options, capsys):
    yml = write_options('badlayer', train={'dfd_opt': {'type': 'L1Loss', 'layer': 'botleneck'}, 'fp32_warmup_iter': 0})
    assert "Did you mean 'bottleneck'?" in refusal(['train', '-opt', str(yml)], capsys)


def test_lmr_without_dfd_is_refused(write_options, delete_key, capsys):
    yml = write_options('lmr_alone', train={'dfd_opt': delete_key})
    assert 'dfd_opt' in refusal(['train', '-opt', str(yml)], capsys)  # refused before anything is built


def test_cli_train_logs_int8_and_fp32_psnr(write_options, workdir):
    yml = write_options('cli_run', logger={'use_tb_logger': True})
    result = subprocess.run(
        [sys.executable, '-m', 'qdr_plugin', 'train', '-opt', str(yml)], cwd=workdir, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = next((workdir / 'experiments' / 'cli_run').glob('train_cli_run_*.log')).read_text()
    assert '# psnr:' in log and '# psnr_fp32:' in log and 'lmr_w_kd' in log
    assert list((workdir / 'tb_logger' / 'cli_run').glob('events.out.tfevents.*'))
    assert (workdir / 'experiments' / 'cli_run' / 'models' / 'net_g_latest.pth').is_file()


def _test_options(write_options, delete_key, name: str, checkpoint: Path, **overrides) -> Path:
    """A ``basicsr test`` options file: the tiny options' network and validation set, ``checkpoint`` to load."""
    return write_options(name, datasets={'train': delete_key}, train=delete_key,
                         path={'pretrain_network_g': str(checkpoint)}, val={'save_img': True, 'suffix': None},
                         **overrides)



@pytest.mark.usefixtures('one_thread')
def test_basicsr_test_scores_qat_and_fp32_checkpoints(write_options, delete_key, workdir):
    models = _train(write_options('scored', train={'total_iter': 2}, val={'val_freq': 2}))
    for checkpoint in ('net_g_latest.pth', 'net_g_fp32.pth'):  # QAT (quantized student + teacher), FP32
        name = f'test_{checkpoint[:-4]}'
        forget_basicsr_logger()
        main(['test', '-opt', str(_test_options(write_options, delete_key, name, (models / checkpoint).resolve()))])
        results = workdir / 'results' / name
        log = next(results.glob(f'test_{name}_*.log')).read_text()
        psnr = float(re.search(r'# psnr: ([0-9.]+)', log).group(1))
        assert 10 < psnr < 60, log[-2000:]
        assert sorted(p.name for p in (results / 'visualization' / 'tiny_val').iterdir()) == [
            f'000_{name}.png', f'001_{name}.png']


@pytest.mark.usefixtures('one_thread')
def test_checkpoints_record_their_options_and_refuse_others(write_options, delete_key, workdir, capsys):
    models = _train(write_options('bits8', train={'total_iter': 2}, val={'val_freq': 2}))
    checkpoint = (models / 'net_g_latest.pth').resolve()
    record = torch.load(checkpoint, weights_only=True)['options']
    assert record['quant']['weight_bits'] == record['quant']['act_bits'] == 8
    assert record['network_g'] == {'type': 'EFM', 'in_ch': 1, 'width': 4, 'depth': 2, 'out_ch': None, 'enc_blocks': 1,
                                   'dec_blocks': 1, 'mid_blocks': 2, 'ldg': True, 'ldg_mode': 'residual',
                                   'ldg_bias_init': 0.0, 'act': 'relu', 'down': 'conv', 'up': 'deconv',
                                   'global_residual': True, 'clamp': True, 'stem': 'unshuffle'}

    bits4 = str(_test_options(write_options, delete_key, 'bits4', checkpoint, quant={'bits': 4}))
    expected = (f'checkpoint {checkpoint} was trained with quant.bits 8, the options say 4: use the options it was '
                'trained with (quant.bits: 8).')
    for argv in (['export', '-opt', bits4, '--ckpt', str(checkpoint), '--out', 'bits4.onnx'],
                 ['infer', '-opt', bits4, '--ckpt', str(checkpoint), '-i', 'images/val', '-o', 'restored'],
                 ['test', '-opt', bits4]):
        assert refusal(argv, capsys) == expected, argv[0]
    assert not (workdir / 'bits4.onnx').exists() and not (workdir / 'restored').exists()

    wide = str(_test_options(write_options, delete_key, 'wide', checkpoint, network_g={'width': 8}))
    assert refusal(['export', '-opt', wide, '--ckpt', str(checkpoint), '--out', 'wide.onnx'], capsys) == (
        f'checkpoint {checkpoint} was trained with network_g.width 4, the options say 8: use the options it was '
        'trained with (network_g.width: 4).')

    ort = write_options('ort', quant={'unsigned_relu': True}, train={'fp32_warmup_iter': 0, 'total_iter': 1},
                        path={'pretrain_network_g': str(checkpoint)})  # as options/qdr_denoise_bsd68_ort.yml does
    assert (_train(ort) / 'net_g_latest.pth').is_file()  # continuing QAT may change quant.unsigned_relu

    plain = workdir / 'published.pth'  # a checkpoint without the record (older ones, published FP32 weights)
    torch.save({'params': torch.load(models / 'net_g_fp32.pth', weights_only=True)['params']}, plain)
    main(['export', '-opt', bits4, '--ckpt', str(plain), '--out', 'plain.onnx', '--fp32'])
    assert (workdir / 'plain.onnx').is_file()
