"""Crash test of the training resume: SIGKILL a real run, resume it with ``--auto_resume``, compare with a run that
was never interrupted.

1. writes tiny training images and a QDR options file (EFM, FP32 warm-up, DFD + LMR, CPU, no data workers) into a
   temporary folder;
2. starts ``basicsr train -opt crash.yml`` as a subprocess and kills it with SIGKILL as soon as its first training
   state (``experiments/crash/training_states/<iter>.state``) appears;
3. restarts it with ``--auto_resume`` and lets it finish;
4. runs the same options, uninterrupted, under another name;
5. prints whether every tensor of the two ``net_g_latest.pth`` (student, teacher, LMR) matches within ``--atol``.

Exit status 0 if they match, 1 if not, 2 if the run could not be interrupted (it finished before the first state
was seen). The runs use one thread (``OMP_NUM_THREADS=1``); the defaults last about 20 s each on one core.

    python benchmarks/crash_resume.py [--iters 300] [--save-freq 45] [--keep]

The training subprocess is ``python -m qdr_plugin train`` when ``qdr_plugin.cli`` runs ``qdr_plugin.train``, else
``qdr_plugin.train.train_pipeline`` called directly (basicsr's own pipeline cannot resume on a CPU-only machine).
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

import qdr_plugin.cli
from qdr_plugin.utils.checkpoint import RECORD_KEY

STATE = re.compile(r'^(\d+)\.state$')
DIRECT = (
    'import os, sys; import qdr_plugin; from qdr_plugin.train import train_pipeline; '
    "sys.argv = ['basicsr train', *sys.argv[1:]]; train_pipeline(os.getcwd())"
)


def _options(name: str, iters: int, save_freq: int) -> dict:
    return {
        'name': name,
        'model_type': 'QDRModel',
        'num_gpu': 0,
        'manual_seed': 10,
        'quant': {'bits': 8, 'calib_batches': 2},
        'datasets': {
            'train': {
                'name': 'crash_train',
                'type': 'GaussianNoiseDataset',
                'dataroot_gt': 'images/train',
                'in_ch': 1,
                'sigma': 25,
                'gt_size': 32,
                'use_hflip': True,
                'use_rot': True,
                'num_worker_per_gpu': 0,
                'batch_size_per_gpu': 4,
                'dataset_enlarge_ratio': 5,  # 8 images * 5 / 4 = 10 iterations per epoch
            },
            'val': {
                'name': 'crash_val',
                'type': 'GaussianNoiseDataset',
                'dataroot_gt': 'images/val',
                'in_ch': 1,
                'sigma': 25,
            },
        },
        'network_g': {'type': 'EFM', 'in_ch': 1, 'width': 8, 'depth': 2},
        'path': {'pretrain_network_g': None, 'strict_load_g': True},
        'train': {
            'fp32_warmup_iter': max(save_freq // 3, 1),  # the crash comes after the switch to QAT
            'optim_g': {'type': 'Adam', 'lr': 1e-3},
            'scheduler': {'type': 'MultiStepLR', 'milestones': [iters // 2], 'gamma': 0.5},
            'total_iter': iters,
            'warmup_iter': -1,
            'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
            'dfd_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
            'lmr_opt': {'type': 'gradnorm'},
        },
        'val': {
            'val_freq': save_freq,
            'save_img': False,
            'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}},
        },
        'logger': {'print_freq': 10, 'save_checkpoint_freq': save_freq, 'use_tb_logger': False},
    }


def _write_images(folder: Path, count: int, size: tuple[int, int], seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    for i in range(count):
        img = 128 + 60 * np.sin(xx / (3 + i)) * np.cos(yy / (4 + i)) + rng.normal(0, 5, size)
        cv2.imwrite(str(folder / f'{i:03d}.png'), np.clip(img, 0, 255).astype(np.uint8))


def _command(yml: Path, *flags: str) -> list[str]:
    if 'qdr_plugin.train' in inspect.getsource(qdr_plugin.cli):
        return [sys.executable, '-m', 'qdr_plugin', 'train', '-opt', str(yml), *flags]
    return [sys.executable, '-c', DIRECT, '-opt', str(yml), *flags]


def _run(root: Path, yml: Path, *flags: str) -> float:
    start = time.monotonic()
    log = root / f'{yml.stem}{"_resume" if flags else ""}.out'
    with open(log, 'w') as out:
        result = subprocess.run(_command(yml, *flags), cwd=root, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.exit(f'crash_resume: {shlex.join(_command(yml, *flags))} failed ({result.returncode}), see {log}')
    return time.monotonic() - start


def _env() -> dict[str, str]:
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}


def _states(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for m in map(STATE.match, os.listdir(folder)) if m)


def _kill_after_first_state(root: Path, yml: Path, timeout: float) -> tuple[int, float]:
    """Start the run, SIGKILL it when a training state exists; ``(iteration of that state, seconds)``."""
    states = root / 'experiments' / yml.stem / 'training_states'
    start = time.monotonic()
    with open(root / f'{yml.stem}_killed.out', 'w') as out:
        proc = subprocess.Popen(_command(yml), cwd=root, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        try:
            while not _states(states):
                if proc.poll() is not None:
                    break
                if time.monotonic() - start > timeout:
                    proc.kill()
                    sys.exit(f'crash_resume: no training state after {timeout:.0f} s')
                time.sleep(0.05)
            finished = proc.poll() is not None
            if not finished:
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
    if finished:
        print(f'crash_resume: the run ended (status {proc.returncode}) before a training state was seen')
        sys.exit(2)
    return _states(states)[-1], time.monotonic() - start


def _compare(first: Path, second: Path, atol: float) -> tuple[bool, float, int]:
    a = torch.load(first, map_location='cpu', weights_only=True)
    b = torch.load(second, map_location='cpu', weights_only=True)
    if a.keys() != b.keys():
        print(f'checkpoint keys differ: {sorted(a)} vs {sorted(b)}')
        return False, float('inf'), 0
    worst, count, same = 0.0, 0, a.pop(RECORD_KEY, None) == b.pop(RECORD_KEY, None)  # the training records
    for key in a:
        if a[key].keys() != b[key].keys():
            print(f'{key}: tensor names differ')
            return False, float('inf'), count
        for name, tensor in a[key].items():
            other = b[key][name]
            count += 1
            if tensor.shape != other.shape:
                print(f'{key}.{name}: shape {tuple(tensor.shape)} vs {tuple(other.shape)}')
                same = False
                continue
            diff = (tensor.double() - other.double()).abs().max().item() if tensor.numel() else 0.0
            worst = max(worst, diff)
            if not diff <= atol:
                print(f'{key}.{name}: max |diff| {diff:.3e}')
                same = False
    return same, worst, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--iters', type=int, default=300, help='total_iter of the runs (default 300)')
    parser.add_argument(
        '--save-freq',
        type=int,
        default=45,
        help='save_checkpoint_freq: the run is killed once the first state is written (default 45, '
        'in the middle of an epoch of 10 iterations)',
    )
    parser.add_argument('--atol', type=float, default=1e-6, help='tolerance per weight (default 1e-6)')
    parser.add_argument('--timeout', type=float, default=600, help='seconds to wait for the first state')
    parser.add_argument('--keep', action='store_true', help='keep the temporary folder and print its path')
    args = parser.parse_args()
    if not 0 < args.save_freq < args.iters:
        parser.error('need 0 < --save-freq < --iters')

    root = Path(tempfile.mkdtemp(prefix='qdr_crash_resume_'))
    try:
        _write_images(root / 'images' / 'train', 8, (48, 48), 0)
        _write_images(root / 'images' / 'val', 2, (40, 56), 1)
        ymls = {}
        for name in ('crash', 'straight'):
            ymls[name] = root / f'{name}.yml'
            ymls[name].write_text(yaml.safe_dump(_options(name, args.iters, args.save_freq), sort_keys=False))
        print(f'training command: {shlex.join(_command(ymls["crash"]))}')

        killed_at, t_killed = _kill_after_first_state(root, ymls['crash'], args.timeout)
        crash = root / 'experiments' / 'crash'
        partial = not (crash / 'models' / 'net_g_latest.pth').exists()
        print(
            f'killed (SIGKILL) after {t_killed:.1f} s, latest training state: iter {killed_at} of {args.iters}'
            f'{"" if partial else " (but net_g_latest.pth exists: the run had finished)"}'
        )
        t_resume = _run(root, ymls['crash'], '--auto_resume')
        logs = ''.join(p.read_text() for p in crash.glob('train_crash_*.log'))
        resumed = 'Resuming training from epoch: ' in logs and not list(root.glob('experiments/crash_archived_*'))
        print(f'resumed with --auto_resume: {"yes" if resumed else "NO"}, finished in {t_resume:.1f} s')
        t_straight = _run(root, ymls['straight'])
        print(f'uninterrupted run: {t_straight:.1f} s')

        same, worst, count = _compare(
            crash / 'models' / 'net_g_latest.pth',
            root / 'experiments' / 'straight' / 'models' / 'net_g_latest.pth',
            args.atol,
        )
        ok = same and resumed and partial
        print(
            f'{count} tensors (student, teacher, LMR), max |diff| {worst:.3e}: '
            f'{"MATCH" if same else "MISMATCH"} within {args.atol:g}'
        )
        print('PASS' if ok else 'FAIL')
    finally:
        if args.keep:
            print(f'kept {root}')
        else:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
