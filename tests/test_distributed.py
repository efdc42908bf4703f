"""Multi-process training on the CPU (gloo): ``torchrun ... -m qdr_plugin train --launcher pytorch`` end to end, and
the ranks' networks, step sizes, teachers and LMR weights staying identical with different data per rank."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import free_port

from qdr_plugin import dist as qdist  # first: the plugin's torchvision alias must precede basicsr's import
from qdr_plugin.quant import is_quantized, is_quantized_state_dict, quantizer_parameters

DIST_TRAIN = {'fp32_warmup_iter': 1, 'total_iter': 4}


def test_torchrun_two_processes_on_cpu(write_options, workdir):
    yml = write_options(
        'dist_run', train=DIST_TRAIN, val={'val_freq': 4}, logger={'save_checkpoint_freq': 4, 'print_freq': 1}
    )
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''}
    command = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
        '-m', 'qdr_plugin', 'train', '-opt', str(yml), '--launcher', 'pytorch',
    ]  # fmt: skip
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    root = workdir / 'experiments' / 'dist_run'
    logs = list(root.glob('train_dist_run_*.log'))
    assert len(logs) == 1  # rank 0 only
    log = logs[0].read_text()
    assert "'dist': True" in log or 'dist: True' in log
    assert 'world_size: 2' in log or "'world_size': 2" in log
    assert '# psnr:' in log and '# psnr_fp32:' in log and 'lmr_w_kd' in log
    assert 'QAT starts at iter 2' in log
    for name in ('net_g_latest.pth', 'net_g_4.pth', 'net_g_fp32.pth'):
        assert (root / 'models' / name).is_file(), name
    assert (root / 'training_states' / '4.state').is_file()
    checkpoint = torch.load(root / 'models' / 'net_g_latest.pth', weights_only=True)
    assert is_quantized_state_dict(checkpoint['params'])
    assert not any(k.startswith('module.') for k in checkpoint['params'])
    assert all(torch.isfinite(v).all() for v in checkpoint['params'].values() if v.is_floating_point())
    assert torch.isfinite(checkpoint['params_lmr']['log_weights']).all()


def _worker(rank: int, opt: dict, init_file: str, out_dir: str) -> None:
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    try:
        opt = {**opt, 'dist': True, 'rank': rank, 'world_size': 2}
        set_random_seed(opt['manual_seed'] + rank)  # as basicsr: a different augmentation stream per rank
        model = build_model(opt)
        assert isinstance(model.net_g, DistributedDataParallel)  # the FP32 warm-up runs under DDP
        data = torch.Generator().manual_seed(100 + rank)  # different batches per rank
        for it in (1, 2, 3):
            gt = torch.rand(2, 1, 16, 16, generator=data)
            model.feed_data({'gt': gt, 'lq': gt + 0.1 * torch.randn(2, 1, 16, 16, generator=data)})
            model.optimize_parameters(it)
            if it == 2:  # QAT started: a new DDP that knows (and all-reduces) the step sizes
                bare = model.get_bare_model(model.net_g)
                assert isinstance(model.net_g, DistributedDataParallel) and is_quantized(bare)
                ddp_params = {id(p) for p in model.net_g.parameters()}
                assert {id(p) for p in quantizer_parameters(bare)} <= ddp_params
        bare = model.get_bare_model(model.net_g)
        state = {
            'student': {k: v.clone() for k, v in bare.state_dict().items()},
            'teacher': {k: v.clone() for k, v in model.net_t.state_dict().items()},
            'lmr': model.lmr.log_weights.detach().clone(),
            'lmr_norms': model.lmr.grad_norms.clone(),
            'lq': model.lq.clone(),
        }
        torch.save(state, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('lmr_type', ['gradnorm', 'uncertainty'])
def test_ranks_stay_identical_after_qat_start(lmr_type, write_options, workdir, monkeypatch):
    from basicsr.utils import make_exp_dirs
    from basicsr.utils.options import parse_options

    yml = write_options(f'dist_unit_{lmr_type}', train={**DIST_TRAIN, 'lmr_opt': {'type': lmr_type}})
    monkeypatch.setattr(sys, 'argv', ['basicsr', '-opt', str(yml)])
    opt, _ = parse_options(str(workdir), is_train=True)
    make_exp_dirs(opt)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    mp.spawn(_worker, args=(opt, str(workdir / 'pg_init'), str(workdir)), nprocs=2, join=True)
    r0, r1 = (torch.load(workdir / f'rank{r}.pt', weights_only=True) for r in (0, 1))
    assert not torch.equal(r0['lq'], r1['lq'])  # the ranks did see different data
    assert is_quantized_state_dict(r0['student'])
    for part in ('student', 'teacher'):
        assert r0[part].keys() == r1[part].keys()
        different = [k for k in r0[part] if not torch.equal(r0[part][k], r1[part][k])]
        assert not different, (part, different)
    steps = [k for k in r0['student'] if k.endswith('.step')]
    assert steps
    assert torch.equal(r0['lmr'], r1['lmr'])
    assert torch.isfinite(r0['lmr']).all()
    if lmr_type == 'gradnorm':
        assert torch.equal(r0['lmr_norms'], r1['lmr_norms']) and torch.isfinite(r0['lmr_norms']).all()


def test_init_dist_rejects_unknown_launcher():
    with pytest.raises(ValueError, match='Invalid launcher'):
        qdist.init_dist('mpi')


def test_train_pipeline_patches_basicsr_init_dist(monkeypatch):
    from basicsr.utils import options

    monkeypatch.setattr(options, 'init_dist', options.init_dist)
    qdist.use_in_basicsr()
    assert options.init_dist is qdist.init_dist
    assert qdist.default_backend() == ('nccl' if torch.cuda.is_available() else 'gloo')


def test_helpers_are_no_ops_without_a_process_group():
    net = torch.nn.Conv2d(1, 1, 3)
    before = net.weight.detach().clone()
    qdist.broadcast_module(net)
    assert torch.equal(net.weight, before) and not qdist.is_dist()
