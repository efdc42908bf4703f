"""Mistakes a user can fix end every command in one line: ``basicsr <command>: <message>`` printed last on stderr,
no traceback, exit status 2. Output paths are checked before any work, outputs are written atomically, and a save
killed mid-write leaves no temporary file behind once the next save runs."""

from __future__ import annotations

import importlib.util
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import cannot_create_in

import qdr_plugin  # noqa: F401  (registers the archs)
from qdr_plugin.archs import EFM
from qdr_plugin.cli import main as cli_main
from qdr_plugin.cli import user_message
from qdr_plugin.deploy import export_cli, infer_cli, ptq_cli
from qdr_plugin.errors import UserError
from qdr_plugin.utils.atomic_write import atomic_output, atomic_write_bytes, remove_stale_temporaries

REPO = Path(__file__).resolve().parents[1]
RANDOM_BYTES = np.random.default_rng(0).bytes(4096)  # a file of noise (fixed: torch.load's error depends on the bytes)
NETWORK = {'type': 'EFM', 'in_ch': 1, 'width': 4, 'depth': 1}


def _load_tool(name: str):
    """A script of ``tools/`` as a module."""
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run ``basicsr argv``, expect a user error: exit status 2 and its one line last on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert 'Traceback' not in err
    return err.strip().splitlines()[-1]


def _not_called(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f'{what} ran before the output path was checked')

    return fail


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.fixture
def setup(write_options, workdir: Path) -> dict[str, Path]:
    """Options, an FP32 checkpoint, and the broken checkpoints a careless or hostile user passes."""
    options = write_options('cli', network_g=dict(NETWORK))
    torch.manual_seed(0)
    state = EFM(in_ch=1, width=4, depth=1).state_dict()
    torch.save({'params': state}, workdir / 'fp32.pth')
    data = (workdir / 'fp32.pth').read_bytes()
    (workdir / 'truncated.pth').write_bytes(data[: len(data) // 2])
    (workdir / 'random.pth').write_bytes(RANDOM_BYTES)
    (workdir / 'empty.pth').write_bytes(b'')
    torch.save({'params': _Evil(workdir / 'pwned')}, workdir / 'evil.pth')
    torch.save({'params': EFM(in_ch=1, width=8, depth=1).state_dict()}, workdir / 'wrong_arch.pth')
    return {'options': options, 'root': workdir}


_READ_FIX = 'give a file saved by basicsr or this plugin (models/net_g_*.pth, training_states/*.state).'
BAD_CHECKPOINTS = [
    ('truncated.pth', f'--ckpt truncated.pth cannot be read (it is not a complete torch file, truncated or damaged): '
                      f'{_READ_FIX}'),
    ('random.pth', f'--ckpt random.pth cannot be read (it is not a torch file, an unreadable pickle): {_READ_FIX}'),
    ('empty.pth', f'--ckpt empty.pth cannot be read (the file is empty): {_READ_FIX}'),
    ('evil.pth', '--ckpt evil.pth cannot be read (it refers to posix.system, which a weights-only load refuses: '
                 f'loading it could run code): {_READ_FIX}'),
    ('wrong_arch.pth', '--ckpt wrong_arch.pth does not fit network_g (type '),
    ('missing.pth', '--ckpt missing.pth does not exist: give the path of an existing file.'),
]


@pytest.mark.parametrize('command', ['export', 'ptq'])
@pytest.mark.parametrize(('checkpoint', 'message'), BAD_CHECKPOINTS)
def test_a_bad_checkpoint_is_one_line(setup, capsys, command, checkpoint, message):
    extra = ['--calib', 'minmax'] if command == 'ptq' else []
    line = _error_line(capsys, [command, '-opt', str(setup['options']), '--ckpt', checkpoint, '--out', 'm.onnx',
                                *extra])
    assert line.startswith(f'basicsr {command}: {message}'), line
    assert not (setup['root'] / 'pwned').exists() and not (setup['root'] / 'm.onnx').exists()


def test_export_user_error_is_the_only_stderr_line_of_the_process(setup):
    result = subprocess.run(
        [sys.executable, '-m', 'qdr_plugin', 'export', '-opt', str(setup['options']), '--ckpt', 'truncated.pth',
         '--out', 'm.onnx'], capture_output=True, text=True, cwd=setup['root'], timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == ['basicsr export: ' + BAD_CHECKPOINTS[0][1]], result.stderr


def test_train_user_error_is_the_last_line_after_the_log(write_options, workdir):
    """A corrupt training image found during training (read by a DataLoader worker): basicsr has logged ~250 lines
    by then; the one line still comes last, without a traceback, and ends the run's log file too."""
    image = workdir / 'images' / 'train' / '001.png'
    image.write_bytes(image.read_bytes()[:60])
    options = write_options('corrupt', datasets={'train': {'num_worker_per_gpu': 1}})
    result = subprocess.run([sys.executable, '-m', 'qdr_plugin', 'train', '-opt', str(options)],
                            capture_output=True, text=True, cwd=workdir, timeout=300)
    lines = result.stderr.strip().splitlines()
    expected = ("basicsr train: GaussianNoiseDataset: cannot decode image 'images/train/001.png' (empty, truncated "
                'or not an image); replace or remove the file.')
    assert result.returncode == 2 and lines[-1] == expected, result.stderr[-3000:]
    assert len(lines) > 50 and 'Traceback' not in result.stderr
    log = next((workdir / 'experiments' / 'corrupt').glob('train_*.log')).read_text().strip().splitlines()
    assert log[-1].endswith(f'ERROR: {expected}')


def test_other_exceptions_keep_their_traceback(monkeypatch):
    def broken(argv):
        raise RuntimeError('a defect of the software')

    monkeypatch.setattr(export_cli, 'main', broken)
    with pytest.raises(RuntimeError, match='a defect of the software'):
        cli_main(['export'])


def test_a_user_error_from_a_dataloader_worker_is_its_own_line():
    raised = UserError('Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent call '
                       'last):\n  File "x.py", line 1, in <module>\nqdr_plugin.errors.UserError: the image is broken.')
    assert user_message(raised) == 'the image is broken.'
    assert user_message(UserError('one line')) == 'one line'


def test_export_output_path_is_checked_before_loading(setup, capsys, monkeypatch):
    root, options = setup['root'], str(setup['options'])
    (root / 'runs').mkdir()
    (root / 'taken.onnx').write_text('a previous export')
    (root / 'a_file').write_text('')
    cases = [
        ('runs', '--out runs is a folder; give the file to write, e.g. --out runs/model.onnx.'),
        ('taken.onnx', '--out taken.onnx exists already; choose another path or pass --overwrite.'),
        ('fp32.pth', '--out fp32.pth is the input --ckpt fp32.pth; writing it would destroy the input: choose another '
                     'path.'),
        ('a_file/m.onnx', f'--out a_file/m.onnx: {root / "a_file"} is a file, not a folder; choose another path.'),
    ]
    if cannot_create_in('/sys'):  # a read-only file system, even for root
        cases.append(('/sys/m.onnx', '--out /sys/m.onnx: cannot write into /sys ('))
    with monkeypatch.context() as patch:
        patch.setattr(export_cli, 'load_networks', _not_called('loading the checkpoint'))
        for out, message in cases:
            line = _error_line(capsys, ['export', '-opt', options, '--ckpt', 'fp32.pth', '--out', out, '--fp32'])
            assert line.startswith(f'basicsr export: {message}'), line
    assert (root / 'taken.onnx').read_text() == 'a previous export'
    cli_main(['export', '-opt', options, '--ckpt', 'fp32.pth', '--out', 'taken.onnx', '--fp32', '--overwrite'])
    assert (root / 'taken.onnx').read_bytes()[:2] != b'a ' and 'OK' in capsys.readouterr().out
    assert not [p.name for p in root.iterdir() if p.name.startswith('.')]



def test_ptq_output_path_is_checked_before_calibration(setup, capsys, monkeypatch):
    (setup['root'] / 'ptq.onnx').write_text('a previous file')
    monkeypatch.setattr(ptq_cli, 'load_networks', _not_called('loading the checkpoint'))
    monkeypatch.setattr(ptq_cli, 'calibration_inputs', _not_called('calibration'))
    line = _error_line(capsys, ['ptq', '-opt', str(setup['options']), '--ckpt', 'fp32.pth', '--out', 'ptq.onnx',
                                '--calib', 'minmax'])
    assert line == 'basicsr ptq: --out ptq.onnx exists already; choose another path or pass --overwrite.'


def test_infer_refuses_existing_outputs_before_loading_the_model(setup, capsys, monkeypatch):
    root, options = setup['root'], str(setup['options'])
    (root / 'restored').mkdir()
    (root / 'restored' / '001.png').write_bytes(b'an earlier result')
    (root / 'a_file').write_text('')
    common = ['infer', '-opt', options, '--ckpt', 'fp32.pth', '-i', 'images/val']
    with monkeypatch.context() as patch:
        patch.setattr(infer_cli, 'load_networks', _not_called('loading the checkpoint'))
        line = _error_line(capsys, [*common, '-o', 'restored'])
        assert line == 'basicsr infer: -o restored already holds 001.png; choose another path or pass --overwrite.'
        line = _error_line(capsys, [*common, '-o', 'a_file'])
        assert line == 'basicsr infer: -o a_file is a file, not a folder; choose another path.'
    cli_main([*common, '-o', 'restored', '--overwrite'])
    assert (root / 'restored' / '001.png').read_bytes().startswith(b'\x89PNG')


def test_convert_dncnn_names_bad_inputs_in_one_line(tmp_path):
    tool = _load_tool('convert_dncnn')
    (tmp_path / 'random.pth').write_bytes(RANDOM_BYTES)
    (tmp_path / 'evil.pth').write_bytes(pickle.dumps({'model': _Evil(tmp_path / 'pwned')}, protocol=2))
    (tmp_path / 'taken.pth').write_text('a previous conversion')
    dst = tmp_path / 'out.pth'
    cases = [
        ('missing.pth', dst, f'{tmp_path / "missing.pth"} does not exist (or is not a file); give the published '
                             'DnCNN model.pth.'),
        ('random.pth', dst, f'cannot convert {tmp_path / "random.pth"}: '),
        ('evil.pth', dst, f'cannot convert {tmp_path / "evil.pth"}: refused to load global posix.system '
                          '(os.system): the file is not the expected DnCNN checkpoint'),
        ('evil.pth', tmp_path / 'taken.pth', f'dst {tmp_path / "taken.pth"} exists already; choose another path or '
                                             'pass --overwrite.'),
    ]
    for src, out, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            tool.main([str(tmp_path / src), str(out)])
        text = str(exit_info.value.code)
        assert text.startswith(f'convert_dncnn: {message}') and '\n' not in text, text
    assert not dst.exists() and not (tmp_path / 'pwned').exists()
    assert (tmp_path / 'taken.pth').read_text() == 'a previous conversion'


def test_check_onnx_int8_names_an_unreadable_file_in_one_line(tmp_path, capsys):
    tool = _load_tool('check_onnx_int8')
    (tmp_path / 'random.onnx').write_bytes(RANDOM_BYTES)
    for name, message in (('missing.onnx', 'the ONNX file does not exist (or is not a file).'),
                          ('random.onnx', 'not a readable ONNX model (')):
        with pytest.raises(SystemExit) as exit_info:
            tool.main([str(tmp_path / name)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith(f'check_onnx_int8: {tmp_path / name}: {message}'), err
        assert len(err.strip().splitlines()) == 1


def test_build_trt_refuses_an_existing_engine_before_the_build(tmp_path, monkeypatch):
    """On a machine that could build (TensorRT and a GPU, mocked here)."""
    tool = _load_tool('build_trt')
    monkeypatch.setitem(sys.modules, 'tensorrt', mock.MagicMock())
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(tool, 'build', _not_called('the engine build'))
    (tmp_path / 'm.engine').write_bytes(b'an engine')
    with pytest.raises(SystemExit) as exit_info:
        tool.main([str(tmp_path / 'm.onnx'), '--engine', str(tmp_path / 'm.engine')])
    assert str(exit_info.value.code) == (f'build_trt: --engine {tmp_path / "m.engine"} exists already; choose another '
                                         'path or pass --overwrite.')


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_a_save_killed_mid_write_is_cleaned_by_the_next_save(setup, capsys):
    """SIGKILL inside the write leaves the target untouched and a hidden temporary; the next export into the folder
    removes it."""
    out = setup['root'] / 'models'
    code = ('import importlib.util, os, signal, sys\n'  # the module alone (standard library only): a quick start
            'spec = importlib.util.spec_from_file_location("atomic_write", sys.argv[2])\n'
            'module = importlib.util.module_from_spec(spec)\n'
            'spec.loader.exec_module(module)\n'
            'with module.atomic_output(sys.argv[1]) as tmp:\n'
            '    tmp.write_bytes(b"half a model")\n'
            '    os.kill(os.getpid(), signal.SIGKILL)\n')
    module = REPO / 'qdr_plugin' / 'utils' / 'atomic_write.py'
    result = subprocess.run([sys.executable, '-c', code, str(out / 'm.onnx'), str(module)], capture_output=True,
                            timeout=120)
    assert result.returncode == -signal.SIGKILL
    stale = [p.name for p in out.iterdir()]
    assert len(stale) == 1 and stale[0].startswith('.m.onnx.') and stale[0].endswith('.tmp')
    cli_main(['export', '-opt', str(setup['options']), '--ckpt', 'fp32.pth', '--out', 'models/m.onnx', '--fp32'])
    assert [p.name for p in out.iterdir()] == ['m.onnx']


def test_stale_temporaries_of_dead_processes_go_live_ones_stay(tmp_path):
    dead = tmp_path / f'.bench.json.{_dead_pid()}.0123abcd.tmp'
    live = tmp_path / f'.bench.csv.{os.getppid()}.0123abcd.tmp'
    other = tmp_path / '.hidden.tmp'
    for path in (dead, live, other):
        path.write_text('')
    atomic_write_bytes(tmp_path / 'bench.md', b'table')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, 'bench.md'])
    assert remove_stale_temporaries(tmp_path) == []


def test_a_failed_write_keeps_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / 'model.onnx'
    target.write_bytes(b'previous')
    with pytest.raises(OSError, match='disk full'), atomic_output(target) as tmp:
        tmp.write_bytes(b'half')
        raise OSError('disk full')
    assert target.read_bytes() == b'previous' and [p.name for p in tmp_path.iterdir()] == ['model.onnx']
