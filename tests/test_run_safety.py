"""What protects a training run's work (``basicsr train``): the experiment folder's lock, a failed save that stops the
run, no non-finite checkpoint, a resume that takes a changed learning rate, and training states that are checked
before they are used."""

from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import refusal

from qdr_plugin.cli import main

SHORT = {'train': {'total_iter': 2}, 'logger': {'save_checkpoint_freq': 1}, 'val': {'val_freq': 100}}

# Another process that holds an experiment folder's lock the way a live run does (flock on .lock, holder written).
_HOLD_LOCK = '''
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], '.lock'), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f'pid {os.getpid()} on host here, started now'.encode())
print('locked', flush=True)
time.sleep(120)
'''


pytestmark = pytest.mark.usefixtures('one_thread')


def _log(experiment: Path) -> str:
    return '\n'.join(p.read_text() for p in sorted(experiment.glob('train_*.log')))


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes of a file fail with EFBIG (as on a full disk, without a root-only mount)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_live_run_keeps_its_folder(write_options, workdir, capsys):
    yml = write_options('busy', **SHORT)
    folder = workdir / 'experiments' / 'busy'
    (folder / 'models').mkdir(parents=True)
    (folder / 'models' / 'net_g_7.pth').write_bytes(b'the live run\'s work')
    holder = subprocess.Popen([sys.executable, '-c', _HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        message = refusal(['train', '-opt', str(yml)], capsys)
        assert f'is in use by a live run (pid {holder.pid} on host here' in message
        assert "give this run another name than 'busy', or wait until that run ends" in message
        message = refusal(['train', '-opt', str(yml), '--auto_resume'], capsys)
        assert f'(pid {holder.pid} on host here, started now): wait until it ends, then resume it' in message
        assert (folder / 'models' / 'net_g_7.pth').read_bytes() == b'the live run\'s work'
        assert not list(workdir.glob('experiments/busy_archived_*'))
    finally:
        holder.kill()
        holder.wait()

    main(['train', '-opt', str(yml)])  # the holder died: its lock is stale, the folder is archived as usual
    assert f'Took over the lock of {folder} left by a run that is no longer running (pid {holder.pid}' in _log(folder)
    assert (folder / 'models' / 'net_g_latest.pth').is_file()
    assert not (folder / '.lock').exists()  # released at the end of the run
    archived = list(workdir.glob('experiments/busy_archived_*'))
    assert len(archived) == 1 and (archived[0] / 'models' / 'net_g_7.pth').is_file()


def test_a_failed_save_stops_the_run_and_keeps_the_last_checkpoint(write_options, workdir, capsys):
    yml = write_options('full', train={'total_iter': 3}, logger={'save_checkpoint_freq': 1}, val={'val_freq': 100})
    folder = workdir / 'experiments' / 'full'
    with _file_size_limit(200_000):  # iter 1 saves 84 KB + 183 KB; the QAT network of iter 2 is 217 KB
        message = refusal(['train', '-opt', str(yml)], capsys)
    assert message == (f'could not save the network {folder}/models/net_g_2.pth: File too large (errno 27: a file '
                       'size limit of the process or the file system); the run stopped, its last saved checkpoint is '
                       'kept: lift the limit (ulimit -f) or train in another folder and resume with --auto_resume.')
    assert 'End of training' not in _log(folder)
    assert sorted(p.name for p in (folder / 'models').iterdir()) == ['net_g_1.pth', 'net_g_fp32.pth']  # no .tmp
    assert sorted(p.name for p in (folder / 'training_states').iterdir()) == ['1.state']
    assert not (folder / '.lock').exists()

    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    killed_save = folder / 'models' / f'.net_g_2.pth.{int(dead.stdout)}.0123abcd.tmp'  # a save killed hard
    killed_save.write_bytes(b'PK\x03\x04 partial')
    main(['train', '-opt', str(yml), '--auto_resume'])  # room again: the run goes on from the last good state
    assert 'Resuming training from epoch: 0, iter: 1.' in _log(folder)
    assert (folder / 'models' / 'net_g_latest.pth').is_file()
    assert not killed_save.exists()  # the next save into its folder removed it


def test_non_finite_weights_are_never_saved_and_a_resume_takes_the_new_rate(write_options, workdir, capsys):
    folder = workdir / 'experiments' / 'lr'
    yml = write_options('lr', **SHORT)
    main(['train', '-opt', str(yml)])  # healthy up to iter 2

    write_options('lr', **{**SHORT, 'train': {'total_iter': 4, 'optim_g': {'lr': 1e37}}})
    message = refusal(['train', '-opt', str(yml), '--auto_resume'], capsys)  # iter 3's update blows the net up
    assert message.startswith('QDRModel: the network diverged at iter 3 (its output on the last training batch '
                              'holds NaN or inf); ')
    assert message.endswith('nothing was saved for this iteration, the last checkpoint is still good: lower '
                            'train.optim_g.lr and resume with --auto_resume (the resumed run takes the new learning '
                            'rate), or check the training images.')
    assert 'train.optim_g.lr changed from 0.001 to 1e+37 on resume' in _log(folder)
    assert not (folder / 'models' / 'net_g_3.pth').exists()
    assert sorted(p.name for p in (folder / 'training_states').iterdir()) == ['1.state', '2.state']

    write_options('lr', **{**SHORT, 'train': {'total_iter': 4, 'optim_g': {'lr': 5e-4}}})
    main(['train', '-opt', str(yml), '--auto_resume'])  # the advice works: resumes from iter 2 at the new rate
    assert 'train.optim_g.lr changed from 0.001 to 0.0005 on resume' in _log(folder)
    state = torch.load(folder / 'training_states' / '4.state', weights_only=True)
    assert [(g['lr'], g['initial_lr']) for g in state['optimizers'][0]['param_groups']] == [(5e-4, 5e-4)] * 2
    assert state['schedulers'][0]['base_lrs'] == [5e-4, 5e-4]
    latest = torch.load(folder / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    assert all(torch.isfinite(v).all() for v in latest.values() if v.is_floating_point())


def test_training_states_are_checked_before_use(write_options, workdir, capsys):
    folder = workdir / 'experiments' / 'states'
    main(['train', '-opt', str(write_options('states', **SHORT))])
    model = folder / 'models' / 'net_g_2.pth'

    yml = write_options('wrong_file', **SHORT, path={'resume_state': str(model)})
    assert refusal(['train', '-opt', str(yml)], capsys) == (
        f'path.resume_state {model} is not a training state (it is a network checkpoint): give a '
        'training_states/<iter>.state file, or give a network as path.pretrain_network_g.')

    state = folder / 'training_states' / '2.state'
    yml = write_options('other', **SHORT, path={'resume_state': str(state)})
    assert refusal(['train', '-opt', str(yml)], capsys) == (
        f"path.resume_state {state} was saved by the experiment 'states', not by 'other': set name: states to "
        'resume it, or start this run from its network with path.pretrain_network_g.')

    yml = write_options('pretrain_state', **SHORT, path={'pretrain_network_g': str(state)})
    assert refusal(['train', '-opt', str(yml)], capsys) == (
        f'path.pretrain_network_g {state} is a training state, not a network checkpoint: give it as '
        'path.resume_state (or use --auto_resume), or give the network saved with it (models/net_g_<iter>.pth).')

    garbage = workdir / 'garbage.pth'
    garbage.write_bytes(bytes(range(256)) * 8)
    yml = write_options('garbage', **SHORT, path={'pretrain_network_g': str(garbage)})
    assert refusal(['train', '-opt', str(yml)], capsys) == (
        f'path.pretrain_network_g {garbage} cannot be read (it is not a torch file, an unreadable pickle): give a '
        'file saved by basicsr or this plugin (models/net_g_*.pth, training_states/*.state).')

    network = folder / 'models' / 'net_g_1.pth'
    network.rename(workdir / 'moved.pth')
    yml = write_options('states', **SHORT, path={'resume_state': str(folder / 'training_states' / '1.state')})
    assert refusal(['train', '-opt', str(yml)], capsys) == (
        f'path.resume_state {folder}/training_states/1.state needs the network saved with it, {network}, which does '
        'not exist: resume from a state whose models/net_g_<iter>.pth is there.')
    (workdir / 'moved.pth').rename(network)

    state.write_bytes(state.read_bytes()[:5000])  # a corrupt latest state: --auto_resume falls back to 1.state
    main(['train', '-opt', str(write_options('states', **{**SHORT, 'train': {'total_iter': 3}})), '--auto_resume'])
    log = _log(folder)
    assert (f'--auto_resume skipped the training state {state}: it cannot be read (it is not a complete torch file, '
            'truncated or damaged).') in log
    assert f'--auto_resume resumes from {folder}/training_states/1.state instead.' in log
    assert 'Resuming training from epoch: 0, iter: 1.' in log
    assert (folder / 'training_states' / '3.state').is_file()
