"""The mmengine front through mmengine's real Runner: parity with QDRModel, exact resume, 2-process gloo training,
export of its checkpoints, and the config check."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmengine')

import onnxruntime as ort  # noqa: E402
from basicsr.metrics import calculate_psnr  # noqa: E402
from basicsr.models import build_model  # noqa: E402
from basicsr.utils import tensor2img  # noqa: E402
from conftest import CLI_NO_VNNI, REPO, free_port  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402

from qdr_plugin.cli import main as basicsr_main  # noqa: E402
from qdr_plugin.deploy import check_onnx  # noqa: E402
from qdr_plugin.mm.cli import build_runner  # noqa: E402
from qdr_plugin.mm.cli import main as mm_main  # noqa: E402
from qdr_plugin.mm.config_check import check_config  # noqa: E402
from qdr_plugin.option_rules import OptionsError  # noqa: E402
from qdr_plugin.utils.checkpoint import load_networks  # noqa: E402
from qdr_plugin.utils.rng import rng_state, set_rng_state  # noqa: E402


def _train(config: Path, work_dir: str, *options: str, resume: str | None = None):
    runner = build_runner('train', str(config), work_dir, [f'experiment_name={work_dir}', *options],
                          resume=resume)
    runner.train()
    return runner


# ----------------------------------------------------------------------------------------------- parity
@HOOKS.register_module(force=True)
class _RecordSteps(Hook):
    """Records what the parity test replays in QDRModel: the initial student, each batch, the RNG states before
    each iteration (before the QAT switch draws its calibration batches) and each step's losses."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self.batches, self.rng, self.losses, self.initial = [], [], [], None

    def before_train(self, runner) -> None:
        self.initial = {k: v.clone() for k, v in runner.model.net.state_dict().items()}

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.batches.append(data_batch)
        self.rng.append(rng_state())

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.losses.append({k: float(v) for k, v in outputs.items()})


def _psnr(net: torch.nn.Module, images: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    net.eval()
    with torch.no_grad():
        scores = [calculate_psnr(tensor2img([net(lq)]), tensor2img([gt]), 0) for lq, gt in images]
    return float(np.mean(scores))


def test_step_parity_with_qdrmodel(mm_config, write_options, parse_yml, one_thread):
    """5 steps (2 FP32, the switch, 3 QAT + DFD + LMR) of the two fronts on the same batches from the same start:
    the same losses, the same weights, step sizes and LMR weights, the same PSNR."""
    recorder = _RecordSteps()
    runner = build_runner('train', str(mm_config('basicsr', iters=5)), 'mm_parity', ['experiment_name=mm_parity'])
    runner.register_hook(recorder)
    runner.train()
    mm = runner.model

    opt = parse_yml(write_options('parity', train={'total_iter': 5, 'fp32_warmup_iter': 2}), True)
    os.makedirs(opt['path']['models'], exist_ok=True)
    model = build_model(opt)
    model.net_g.load_state_dict(recorder.initial)
    for it, (batch, rng) in enumerate(zip(recorder.batches, recorder.rng), start=1):
        model.update_learning_rate(it, warmup_iter=-1)
        set_rng_state(rng)  # the calibration of the switch draws from the global RNGs
        model.feed_data({'lq': batch['lq'], 'gt': batch['gt']})
        model.optimize_parameters(it)
        for key, value in model.log_dict.items():
            assert value == pytest.approx(recorder.losses[it - 1][key], abs=1e-6), (it, key)

    ours, theirs = mm.net.state_dict(), model.net_g.state_dict()
    assert ours.keys() == theirs.keys() and any('step' in k or 'scale' in k for k in ours)
    assert max(float((ours[k].double() - theirs[k].double()).abs().max()) for k in ours) <= 1e-6
    assert torch.allclose(mm.lmr.log_weights, model.lmr.log_weights, atol=1e-6)
    assert max(float((a - b).abs().max()) for a, b in
               zip(mm.teacher.state_dict().values(), model.net_t.state_dict().values())) == 0.0
    images = [(b['lq'], b['gt']) for b in runner.val_dataloader]
    assert abs(_psnr(mm.net, images) - _psnr(model.net_g, images)) <= 1e-4


# ----------------------------------------------------------------------------------------------- resume
def _states(work_dir: str, it: int) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(Path(work_dir) / f'iter_{it}.pth', weights_only=True)  # mmengine 0.10.7's would fail
    return checkpoint['state_dict']


class _Crash(Hook):
    """Stops the run with an error before iteration ``at`` (0-based), as a killed process stops."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        if runner.iter == self.at:
            raise RuntimeError(f'killed before iter {self.at}')


@pytest.mark.parametrize('order', ['mmengine', 'basicsr'])  # basicsr: epochs of 4 iterations
@pytest.mark.parametrize('saved_at', [2, 4])  # 2: the checkpoint before the switch to QAT (at iter 2), 4: after it
def test_resume_is_exact(mm_config, saved_at, order, one_thread):
    """A run killed one iteration after its checkpoint, resumed with --resume (the latest checkpoint of its work
    directory), ends with the weights of an uninterrupted run, in either data order."""
    config = mm_config('pipeline', iters=6, order=order)
    _train(config, 'full')
    crashed = build_runner('train', str(config), 'killed', ['experiment_name=killed_first'])
    crashed.register_hook(_Crash(saved_at + 1))
    with pytest.raises(RuntimeError, match='killed before iter'):
        crashed.train()
    assert sorted(p.name for p in Path('killed').glob('iter_*.pth'))[-1] == f'iter_{saved_at}.pth'
    _train(config, 'killed', resume='auto')
    full, resumed = _states('full', 6), _states('killed', 6)
    assert full.keys() == resumed.keys() and any(k.startswith('teacher.') for k in full)
    assert max(float((full[k].double() - resumed[k].double()).abs().max()) for k in full) <= 1e-6


# -------------------------------------------------------------------------------------------- distributed
@pytest.mark.parametrize('order', ['mmengine', 'basicsr'])
def test_two_process_gloo_training(mm_config, workdir, order):
    config = mm_config('pipeline', iters=4, order=order)
    out = workdir / 'ranks.json'
    command = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
               str(REPO / 'tests' / 'mm_ddp_worker.py'), str(config), 'ddp', str(out), 'experiment_name=ddp']
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result == {'max_diff': 0.0, 'quantized': True, 'world': 2}
    assert 'QAT starts at iter 2' in done.stdout + done.stderr


# ------------------------------------------------------------------------------------------------- export
def test_checkpoint_exports_and_matches_in_onnxruntime(mm_config, capsys, one_thread):
    runner = _train(mm_config('pipeline', iters=4), 'exp')
    mm_main(['convert', 'exp/iter_4.pth', 'net_g.pth'])
    basicsr_main(['export', '-opt', 'net_g.yml', '--ckpt', 'net_g.pth', '--out', 'net_g.onnx', *CLI_NO_VNNI])
    assert 'OK' in capsys.readouterr().out
    net, _ = load_networks(runner.model.network_opt, runner.cfg.model.quant, 'net_g.pth')
    assert not check_onnx('net_g.onnx', 'onnxruntime', net).problems  # ORT's integers are the network's
    lq = next(iter(runner.val_dataloader))['lq']
    session = ort.InferenceSession('net_g.onnx', providers=['CPUExecutionProvider'])
    onnx_out = session.run(None, {'input': lq.numpy()})[0]
    runner.model.net.eval()
    with torch.no_grad():
        torch_out = runner.model.net(lq).numpy()
    mse = float(np.mean((onnx_out - torch_out) ** 2))
    assert mse == 0 or 10 * math.log10(1 / mse) > 40


def test_test_command_scores_int8_and_fp32(mm_config, capsys, one_thread):
    config = mm_config('pipeline', iters=4)
    _train(config, 'scored')
    mm_main(['test', str(config), 'scored/iter_4.pth', '--work-dir', 'scored_test',
             '--cfg-options', 'experiment_name=scored_test'])
    logged = capsys.readouterr().out
    assert all(f'{k}:' in logged for k in ('PSNR', 'SSIM', 'PSNR_fp32', 'PSNR_diff'))


# ----------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize('name', ['qdr_efm_denoise_demo', 'qdr_efm_dehaze_demo'])
def test_repo_configs_pass_the_check(name, monkeypatch):
    from mmengine.config import Config

    monkeypatch.chdir(REPO)
    check_config(Config.fromfile(f'configs/{name}.py'), True, REPO)


@pytest.mark.parametrize(('options', 'expected'), [
    (['model.train.dfd_opt.laeyr=x'], "options error at model.train.dfd_opt.laeyr: unknown key 'laeyr'"),
    (['model.train.lmr_opt.lr=fast'], 'options error at model.train.lmr_opt.lr:'),
    (['optim_wrapper.optimizer.type=Adamm'], 'options error at optim_wrapper.optimizer.type:'),
    (['model.quant.calibration=maxx'], 'options error at model.quant.calibration:'),
    (['model.network_g.widht=4'], 'options error at model.network_g.widht:'),
    (['train_dataloader.dataset.gt_folder=nowhere'], 'options error at train_dataloader.dataset.gt_folder: folder '
                                                     'not found'),
    (['model.type=SRModel'], 'options error at model.type: the mmengine front trains QDRRestorer'),
])
def test_config_mistakes_stop_with_one_line(mm_config, capsys, options, expected):
    config = mm_config('pipeline', iters=4)
    with pytest.raises(SystemExit) as stop:
        mm_main(['train', str(config), '--work-dir', 'bad', '--cfg-options', *options])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f'qdr_plugin.mm train: {expected}'), last
    assert not Path('bad').exists()  # nothing was built


def test_config_check_names_the_config_key(mm_config):
    from mmengine.config import Config

    cfg = Config.fromfile(str(mm_config('pipeline')))
    cfg.optim_wrapper.optimizer.lr = -1
    with pytest.raises(OptionsError, match=r'^options error at optim_wrapper\.optimizer\.lr:'):
        check_config(cfg, True, Path.cwd())


def test_convert_refuses_other_files(workdir, capsys):
    torch.save({'params': {}}, 'plain.pth')
    with pytest.raises(SystemExit) as stop:
        mm_main(['convert', 'plain.pth', 'out.pth'])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith('qdr_plugin.mm convert: plain.pth: not an mmengine checkpoint of QDRRestorer'), last
    assert not Path('out.pth').exists() and not Path('out.yml').exists()


# ----------------------------------------------------------------------------------------------- data
def test_noise_pipeline_draws_what_gaussian_noise_dataset_draws(workdir):
    """The same RNG states give the same crop, flips and noise through the mmcv-style pipeline as through the
    plugin's GaussianNoiseDataset; validation noise is the same fixed draw."""
    from basicsr.data import build_dataset
    from mmengine.registry import DefaultScope

    import qdr_plugin.mm  # noqa: F401  (registration)
    from qdr_plugin.mm.data.datasets import ImageFolderDataset

    def pipeline(seeded: bool) -> list[dict]:
        if seeded:
            return [dict(type='LoadImage', key='gt', channels=1), dict(type='AddGaussianNoise', sigma=25, seeded=True),
                    dict(type='PackInputs')]
        return [dict(type='LoadImage', key='gt', channels=1), dict(type='PairedRandomCrop', gt_size=16),
                dict(type='Flip'), dict(type='AddGaussianNoise', sigma=25), dict(type='PackInputs')]

    for phase, folder in (('train', 'images/train'), ('val', 'images/val')):
        theirs = build_dataset({'name': phase, 'type': 'GaussianNoiseDataset', 'phase': phase, 'dataroot_gt': folder,
                                'in_ch': 1, 'sigma': 25, 'gt_size': 16, 'use_hflip': True, 'use_rot': True})
        with DefaultScope.overwrite_default_scope('qdr_plugin'):  # as the Runner of a config sets it
            ours = ImageFolderDataset(folder, pipeline=pipeline(phase == 'val'))
        assert len(ours) == len(theirs)
        for index in range(len(ours)):
            state = rng_state()
            mine = ours[index]
            set_rng_state(state)
            other = theirs[index]
            assert torch.equal(mine['gt'], other['gt']) and torch.equal(mine['lq'], other['lq']), (phase, index)


def test_synthetic_degradation_is_the_dataset_degradation(workdir):
    from mmengine.registry import TRANSFORMS

    import qdr_plugin.mm  # noqa: F401  (registration)
    from qdr_plugin.data.haze_dataset import SyntheticHazeDataset

    haze = TRANSFORMS.build(dict(type='qdr_plugin.SyntheticDegradation', dataset='SyntheticHazeDataset', seeded=True,
                                 beta=[1.0, 1.0], airlight=[0.8, 0.8]))
    clean = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    lq = haze.transform({'gt': clean, 'index': 3})['lq']
    params = SyntheticHazeDataset.check_parameters({'beta': [1.0, 1.0], 'airlight': [0.8, 0.8]}, 'x')
    expected = SyntheticHazeDataset.degrade(clean, np.random.default_rng(3), **params)
    assert lq.shape == clean.shape and np.array_equal(lq, expected.astype(np.float32)) and not np.allclose(lq, clean)
