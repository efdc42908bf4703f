"""Run models over benchmark sets: one result row per (model, dataset, noise level or scale), plus retention
against a reference model (docs/evaluation.md: ``PSNR / PSNR_ref`` and the drop in dB, same images) and the
per-model retention summary over all sets.

A set without ground truth (:attr:`BenchSet.has_gt` ``False``) is scored against the reference model's output:
the reference runs over it first, its 8-bit outputs become the ``gt`` of every other model
(:class:`AgainstReference`), and its own row has no PSNR / SSIM.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from basicsr.utils import tensor2img
from torch.utils.data import Dataset
from tqdm import tqdm

from qdr_plugin.deploy.infer import Restorer
from qdr_plugin.utils.evaluation import evaluate

from .models import BenchModel
from .protocol import BenchSet
from .report import GROUND_TRUTH

Outputs = dict[tuple[str, str], list[np.ndarray]]
"""``(set label, model name)`` -> the model's first 8-bit outputs on that set (``tensor2img`` images: ``H x W`` gray
or ``H x W x 3`` BGR)."""
Observer = Callable[[BenchSet, str, int, np.ndarray], None]
"""``observe(set, model name, image index, 8-bit output)``: called on every output :func:`run_benchmark` scores."""


def check_channels(model: BenchModel, bench_set: BenchSet) -> None:
    """``ValueError`` naming the fix when ``model`` takes another number of channels than ``bench_set`` holds."""
    if model.channels == bench_set.channels:
        return
    kind = {1: 'gray', 3: 'RGB'}
    what = 'its options\' network_g' if model.runtime == 'pytorch' else 'the ONNX file'
    raise ValueError(
        f'{model.path} (--model {model.name}) takes {model.channels}-channel input ({what}) but {bench_set.name} is '
        f'{bench_set.channels}-channel ({kind.get(bench_set.channels)}); bench it on a '
        f'{kind.get(model.channels, model.channels)} set or give a {bench_set.channels}-channel model.'
    )


def tensor_restore(restore: Restorer, scale: int, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``restore`` (numpy) as the tensor function :func:`qdr_plugin.utils.evaluation.evaluate` calls, checking that
    the output is ``scale`` times the input (a wrong ``--scale`` is named instead of failing in the metric)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        y = restore(x.numpy())
        want = (x.shape[2] * scale, x.shape[3] * scale)
        if tuple(y.shape[2:]) != want:
            raise ValueError(
                f'model {name} turned a {x.shape[2]}x{x.shape[3]} input into {y.shape[2]}x{y.shape[3]}, expected '
                f'{want[0]}x{want[1]} for scale {scale}; check --task / --scale.'
            )
        return torch.from_numpy(np.ascontiguousarray(y))

    return run


def _keeping(run: Callable[[torch.Tensor], torch.Tensor], kept: list[np.ndarray], count: int,
             observe: Callable[[int, np.ndarray], None] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``run`` that also appends the 8-bit form of its first ``count`` outputs to ``kept`` and hands every output's
    8-bit form, with its index in the set, to ``observe``."""
    calls = 0

    def call(x: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        y = run(x)
        if len(kept) < count or observe is not None:
            img = tensor2img([y])
            if len(kept) < count:
                kept.append(img)
            if observe is not None:
                observe(calls, img)
        calls += 1
        return y

    return call


class AgainstReference(Dataset):
    """The items of a set without ground truth, with the reference model's 8-bit outputs (``tensor2img`` images)
    as ``gt`` (float32 ``C x H x W`` in [0, 1], RGB): ``evaluate`` then scores a model's fidelity to the
    reference."""

    def __init__(self, dataset: Dataset, outputs: Sequence[np.ndarray]) -> None:
        self.dataset, self.outputs = dataset, outputs

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = self.outputs[index]
        chw = img[None] if img.ndim == 2 else img[..., ::-1].transpose(2, 0, 1)
        return {**self.dataset[index], 'gt': torch.from_numpy(chw.astype(np.float32) / 255.0)}

    def __len__(self) -> int:
        return len(self.outputs)


def score(restore: Restorer, bench_set: BenchSet, name: str, keep: int = 0,
          dataset: Dataset | None = None, observe: Callable[[int, np.ndarray], None] | None = None) -> dict[str, Any]:
    """Mean and per-image PSNR / SSIM of ``restore`` on ``bench_set`` (or on ``dataset``, the set's items with
    other targets) with the set's protocol; ``outputs``: the first ``keep`` 8-bit outputs. ``observe(index,
    output)`` sees every 8-bit output."""
    kept: list[np.ndarray] = []
    run = _keeping(tensor_restore(restore, bench_set.scale, name), kept, keep, observe)
    scores = evaluate(run, bench_set.dataset if dataset is None else dataset, bench_set.crop_border,
                      bench_set.test_y_channel, desc=f'{name} {bench_set.name} {bench_set.setting}')
    return {**scores, 'outputs': kept}


@torch.no_grad()
def reference_outputs(restore: Restorer, bench_set: BenchSet, name: str) -> list[np.ndarray]:
    """The 8-bit outputs (``tensor2img`` images) of ``restore`` on every input of ``bench_set``."""
    run = tensor_restore(restore, bench_set.scale, name)
    return [tensor2img([run(bench_set.dataset[i]['lq'].unsqueeze(0))])
            for i in tqdm(range(len(bench_set.dataset)), desc=f'{name} {bench_set.name} (reference)', unit='img',
                          leave=False)]


def run_benchmark(
    models: Sequence[BenchModel], sets: Sequence[BenchSet], fps: dict[str, float | None],
    reference: str | None = None, keep: int = 0, observe: Observer | None = None,
) -> tuple[list[dict[str, Any]], Outputs]:
    """Score every model on every set (tqdm over the pairs); ``fps`` maps model names to frames per second.

    ``reference``: the model whose outputs a set without ground truth is scored against (required when there is
    such a set). ``observe(set, model name, index, output)`` sees every 8-bit output that is scored (the downstream
    detection collects them). Returns the rows and, per set and model, the first
    ``keep`` 8-bit outputs.
    """
    for model in models:
        for bench_set in sets:
            check_channels(model, bench_set)
    no_gt = [s.name for s in sets if not s.has_gt]
    if no_gt and reference is None:
        raise ValueError(f'{", ".join(no_gt)} has no ground truth: its PSNR is measured against a reference model\'s '
                         'output; add an FP32 model or name one with --reference NAME.')
    by_name = {m.name: m for m in models}
    targets: dict[str, list[np.ndarray]] = {}
    rows, outputs = [], {}
    pairs = [(m, s) for m in models for s in sets]
    for model, bench_set in tqdm(pairs, desc='bench', unit='run', file=sys.stderr):
        against = GROUND_TRUTH if bench_set.has_gt else f'{reference} output'
        if not bench_set.has_gt and bench_set.label not in targets:
            targets[bench_set.label] = reference_outputs(by_name[reference].restore, bench_set, reference)
        if not bench_set.has_gt and model.name == reference:
            scores = {'psnr': None, 'ssim': None, 'psnr_per_image': None,
                      'outputs': targets[bench_set.label][:keep]}
        else:
            dataset = None if bench_set.has_gt else AgainstReference(bench_set.dataset, targets[bench_set.label])
            seen = None if observe is None else partial(observe, bench_set, model.name)
            scores = score(model.restore, bench_set, model.name, keep, dataset, seen)
        outputs[bench_set.label, model.name] = scores['outputs']
        rows.append({
            'model': model.name, 'runtime': model.runtime, 'precision': model.precision, 'path': str(model.path),
            'task': bench_set.task, 'dataset': bench_set.name, 'sigma': bench_set.sigma, 'scale': bench_set.scale,
            'setting': bench_set.setting, 'scored_on': bench_set.scored_on, 'psnr_against': against,
            'images': len(bench_set.images), 'psnr': _rounded(scores['psnr'], 4), 'ssim': _rounded(scores['ssim'], 4),
            'retention': None, 'drop_db': None, 'params': model.params, 'macs': model.macs,
            'fps': _rounded(fps.get(model.name), 2),
            'psnr_per_image': None if scores['psnr_per_image'] is None
            else [round(float(p), 4) for p in scores['psnr_per_image']],
        })
    return rows, outputs


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def _reference_pairs(rows: Sequence[dict[str, Any]], reference: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(row, reference row)`` for every row that has a reference row on the same dataset, noise level and scale,
    both with a PSNR against ground truth."""
    refs = {(r['dataset'], r['sigma'], r['scale']): r for r in rows if r['model'] == reference}
    pairs = []
    for row in rows:
        ref = refs.get((row['dataset'], row['sigma'], row['scale']))
        if ref is not None and row['psnr_against'] == GROUND_TRUTH and row['psnr'] is not None and ref['psnr']:
            pairs.append((row, ref))
    return pairs


def add_retention(rows: list[dict[str, Any]], reference: str) -> None:
    """Set ``retention = psnr / psnr_ref`` and ``drop_db = psnr_ref - psnr`` on every row that has a row of model
    ``reference`` on the same dataset, noise level and scale (rows scored against ground truth only)."""
    for row, ref in _reference_pairs(rows, reference):
        row['retention'] = round(row['psnr'] / ref['psnr'], 5)
        row['drop_db'] = round(ref['psnr'] - row['psnr'], 4)


def retention_summary(rows: Sequence[dict[str, Any]], reference: str) -> list[dict[str, Any]]:
    """Per model other than ``reference``, over its ``n`` rows with a reference row (each set at each noise level
    or scale, scored against ground truth; sets without ground truth are left out):

    ``retention = (1 / n) sum_i PSNR_i / PSNR_ref,i``, ``mean_drop_db = (1 / n) sum_i (PSNR_ref,i - PSNR_i)``,
    ``max_drop_db = max_i (PSNR_ref,i - PSNR_i)`` and ``max_drop_on``, the set (and setting) where it occurs.
    """
    per_model: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for row, ref in _reference_pairs(rows, reference):
        if row['model'] != reference:
            per_model.setdefault(row['model'], []).append((row, ref))
    summary = []
    for model, pairs in per_model.items():
        ratios = [row['psnr'] / ref['psnr'] for row, ref in pairs]
        drops = [ref['psnr'] - row['psnr'] for row, ref in pairs]
        worst = max(range(len(pairs)), key=drops.__getitem__)
        summary.append({
            'model': model, 'sets': len(pairs), 'retention': round(float(np.mean(ratios)), 5),
            'mean_drop_db': round(float(np.mean(drops)), 4), 'max_drop_db': round(drops[worst], 4),
            'max_drop_on': f'{pairs[worst][0]["dataset"]}, {pairs[worst][0]["setting"]}',
        })
    return summary
