"""BasicSR's data order in the mmengine front: a whole run of each front from the same seed, each drawing its own
batches (basicsr's EnlargedSampler and epochs, calibration and validation as each front does them), ends with the
same networks and validation scores; and the config check of that order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip('mmengine')

from mmengine.hooks import Hook  # noqa: E402

from qdr_plugin.mm.cli import build_runner  # noqa: E402
from qdr_plugin.mm.cli import main as mm_main  # noqa: E402
from qdr_plugin.models import QDRModel  # noqa: E402
from qdr_plugin.train import train_pipeline  # noqa: E402

# 4 images * ratio 2 / batch 2: epochs of 4 iterations; FP32 to 5, the switch (calibration) at 6, QAT + DFD + LMR to
# 10 with the learning rate halved at 7; validations at 4, 8 and the end
TOTAL, WARMUP, VAL_EVERY, MILESTONE = 10, 5, 4, 7


class _RecordScores(Hook):
    """The PSNR of each validation of the mmengine front (``PSNR_fp32`` once scored)."""

    def __init__(self) -> None:
        self.scores: list[dict[str, float]] = []

    def after_val_epoch(self, runner, metrics=None) -> None:
        self.scores.append({k: metrics[k] for k in ('PSNR', 'PSNR_fp32') if k in metrics})


def _basicsr_run(yml: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list[dict[str, float]]]:
    """``basicsr train -opt yml``: its final networks (``net_g_latest.pth``) and each validation's PSNR."""
    scores: list[dict[str, float]] = []
    log_scores = QDRModel._log_validation_metric_values

    def record(model: QDRModel, current_iter, dataset_name, tb_logger) -> None:
        log_scores(model, current_iter, dataset_name, tb_logger)
        fp32 = model._fp32_metrics.get(dataset_name, {})
        scores.append({'PSNR': model.metric_results['psnr'], **({'PSNR_fp32': fp32['psnr']} if fp32 else {})})

    monkeypatch.setattr(QDRModel, '_log_validation_metric_values', record)
    monkeypatch.setattr(sys, 'argv', ['basicsr train', '-opt', str(yml)])
    train_pipeline(str(Path.cwd()))
    return torch.load(Path('experiments', yml.stem, 'models', 'net_g_latest.pth'), weights_only=True), scores


def _max_diff(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> float:
    assert ours.keys() == theirs.keys()
    return max(float((ours[k].double() - theirs[k].double()).abs().max()) for k in ours)


@pytest.mark.parametrize('workers', [0, 1])
def test_whole_run_equals_basicsr_train(workers, write_options, mm_config, monkeypatch, one_thread):
    """Both fronts, same seed, same options, 10 iterations over 3 epochs: the same student (weights and step sizes),
    teacher and LMR weights, and the same INT8 and FP32 validation PSNR to 1e-4 dB at every validation."""
    yml = write_options('twin', datasets={'train': {'dataset_enlarge_ratio': 2, 'num_worker_per_gpu': workers}},
                        train={'total_iter': TOTAL, 'fp32_warmup_iter': WARMUP,
                               'scheduler': {'milestones': [MILESTONE]}},
                        val={'val_freq': VAL_EVERY}, logger={'save_checkpoint_freq': 100})
    theirs, their_scores = _basicsr_run(yml, monkeypatch)

    recorder = _RecordScores()
    config = mm_config('basicsr', iters=TOTAL, order='basicsr', workers=workers)
    runner = build_runner('train', str(config), 'twin_mm', [
        'experiment_name=twin_mm', f'model.train.fp32_warmup_iter={WARMUP}', f'train_cfg.val_interval={VAL_EVERY}',
        f'param_scheduler.milestones=[{MILESTONE}]'])
    runner.register_hook(recorder)
    runner.train()
    mm = runner.model

    assert mm.quantized and any('step' in k or 'scale' in k for k in theirs['params'])
    assert _max_diff(mm.net.state_dict(), theirs['params']) <= 1e-6
    assert _max_diff(mm.teacher.state_dict(), theirs['params_teacher']) <= 1e-6
    assert _max_diff(mm.lmr.state_dict(), theirs['params_lmr']) <= 1e-6
    assert len(recorder.scores) == len(their_scores) == 3  # at 4 (FP32), 8 (INT8 and the teacher), 10
    assert [s.keys() for s in recorder.scores] == [s.keys() for s in their_scores]
    for ours, other in zip(recorder.scores, their_scores):
        assert all(abs(ours[k] - other[k]) <= 1e-4 for k in ours), (ours, other)


@pytest.mark.parametrize(('options', 'expected'), [
    (['train_dataloader.drop_last=False'], 'options error at train_dataloader.drop_last: must be True with '
                                           'EnlargedSampler'),
    (['train_dataloader.sampler.ratio=0'], 'options error at train_dataloader.sampler.ratio: must be a positive '
                                           'integer'),
])
def test_basicsr_order_mistakes_stop_with_one_line(mm_config, capsys, options, expected):
    with pytest.raises(SystemExit) as stop:
        mm_main(['train', str(mm_config('pipeline', order='basicsr')), '--work-dir', 'bad', '--cfg-options', *options])
    assert stop.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f'qdr_plugin.mm train: {expected}'), last
    assert not Path('bad').exists()
