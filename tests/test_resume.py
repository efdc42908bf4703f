"""Exact, CPU-safe resume (``qdr_plugin.train``) and atomic checkpoints (``qdr_plugin.utils.atomic``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from qdr_plugin.train import train_pipeline
from qdr_plugin.utils.atomic import atomic_torch_save

# 4 images * dataset_enlarge_ratio 2 / batch 2 = 4 iterations per epoch
RESUME_OPTIONS = {
    'datasets': {'train': {'dataset_enlarge_ratio': 2, 'num_worker_per_gpu': 0}},
    'train': {'total_iter': 8, 'fp32_warmup_iter': 2},
    'logger': {'print_freq': 1},
}


pytestmark = pytest.mark.usefixtures('one_thread')


def _train(yml: Path, *flags: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``basicsr train -opt yml [flags]`` through ``qdr_plugin.train``, rooted at the current directory."""
    monkeypatch.setattr(sys, 'argv', ['basicsr train', '-opt', str(yml), *flags])
    train_pipeline(str(Path.cwd()))
    return Path('experiments') / yml.stem


def _options(resume_at: int, total_iter: int) -> dict:
    return {
        **RESUME_OPTIONS,
        'train': {**RESUME_OPTIONS['train'], 'total_iter': total_iter},
        'logger': {**RESUME_OPTIONS['logger'], 'save_checkpoint_freq': resume_at},
        'val': {'val_freq': resume_at},  # a validation right after the save must not shift the training RNG
    }


@pytest.mark.parametrize(
    'resume_at',
    [
        pytest.param(4, id='epoch_boundary_after_qat_start'),
        pytest.param(2, id='mid_epoch_before_qat_start'),
    ],
)
def test_resumed_run_equals_uninterrupted_run(resume_at, write_options, monkeypatch, capsys):
    straight = _train(write_options('straight', **_options(resume_at, 8)), monkeypatch=monkeypatch)

    resumed_yml = write_options('resumed', **_options(resume_at, resume_at))
    resumed = _train(resumed_yml, monkeypatch=monkeypatch)
    assert sorted(p.name for p in (resumed / 'training_states').iterdir()) == [f'{resume_at}.state']
    (resumed / 'training_states' / f'.{2 * resume_at}.state.1.dead.tmp').write_bytes(b'PK')  # a killed save's leftover
    write_options('resumed', **_options(resume_at, 8))
    capsys.readouterr()
    _train(resumed_yml, '--auto_resume', monkeypatch=monkeypatch)
    assert f'net_g_{resume_at}.pth' in capsys.readouterr().out  # check_resume: "Set pretrain_network_g to ..."
    assert not list(Path('experiments').glob('resumed_archived_*'))  # continued, not restarted in a fresh folder

    expected = torch.load(straight / 'models' / 'net_g_latest.pth', weights_only=True)
    actual = torch.load(resumed / 'models' / 'net_g_latest.pth', weights_only=True)
    assert set(expected) == set(actual) == {'params', 'params_teacher', 'params_lmr', 'options'}
    assert expected.pop('options') == actual.pop('options')  # the training record (network_g, quant)
    for key in expected:
        assert expected[key].keys() == actual[key].keys(), key
        for name, tensor in expected[key].items():
            torch.testing.assert_close(actual[key][name], tensor, rtol=0, atol=1e-6, msg=f'{key}.{name}')

    # every file we wrote loads without unpickling code; training states carry RNG, LMR optimizer and best metrics
    for experiment in (straight, resumed):
        for path in [*(experiment / 'models').glob('*.pth'), *(experiment / 'training_states').glob('*.state')]:
            torch.load(path, weights_only=True)
    state = torch.load(straight / 'training_states' / '8.state', weights_only=True)
    assert {'rng', 'lmr_optimizer', 'optimizers', 'schedulers'} <= set(state)
    assert len(state['optimizers'][0]['param_groups']) == 2  # weights + quantizer step sizes after the QAT switch


def test_auto_resume_without_states_starts_fresh_on_cpu(write_options, monkeypatch):
    experiment = _train(write_options('fresh', **_options(4, 4)), '--auto_resume', monkeypatch=monkeypatch)
    assert (experiment / 'models' / 'net_g_latest.pth').is_file()
    assert (experiment / 'training_states' / '4.state').is_file()


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / 'net_g_latest.pth'
    atomic_torch_save({'params': {'w': torch.ones(3)}}, path)
    real_save = torch.save

    def crash_mid_write(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 partial')
        f.flush()
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', crash_mid_write)
    with pytest.raises(OSError, match='disk full'):
        atomic_torch_save({'params': {'w': torch.zeros(3)}}, path)
    monkeypatch.setattr(torch, 'save', real_save)

    assert [p.name for p in tmp_path.iterdir()] == ['net_g_latest.pth']  # no temporary file left behind
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.ones(3))
    atomic_torch_save({'params': {'w': torch.zeros(3)}}, path)
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.zeros(3))
