"""Run models over benchmark sets: one result row per (model, dataset, noise level or scale), plus retention
against a reference model (docs/evaluation.md: ``PSNR / PSNR_ref`` and the drop in dB, same images)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from qdr_plugin.deploy.infer import Restorer
from qdr_plugin.utils.evaluation import evaluate

from .models import BenchModel
from .protocol import BenchSet


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


def score(restore: Restorer, bench_set: BenchSet, name: str) -> dict[str, Any]:
    """Mean and per-image PSNR / SSIM of ``restore`` on ``bench_set`` with the set's protocol."""
    return evaluate(
        tensor_restore(restore, bench_set.scale, name), bench_set.dataset, bench_set.crop_border,
        bench_set.test_y_channel, desc=f'{name} {bench_set.name} {bench_set.setting}',
    )


def run_benchmark(
    models: Sequence[BenchModel], sets: Sequence[BenchSet], fps: dict[str, float | None]
) -> list[dict[str, Any]]:
    """Score every model on every set (tqdm over the pairs); ``fps`` maps model names to frames per second."""
    for model in models:
        for bench_set in sets:
            check_channels(model, bench_set)
    rows = []
    pairs = [(m, s) for m in models for s in sets]
    for model, bench_set in tqdm(pairs, desc='bench', unit='run', file=sys.stderr):
        scores = score(model.restore, bench_set, model.name)
        rows.append({
            'model': model.name, 'runtime': model.runtime, 'precision': model.precision, 'path': str(model.path),
            'task': bench_set.task, 'dataset': bench_set.name, 'sigma': bench_set.sigma, 'scale': bench_set.scale,
            'images': len(bench_set.images), 'psnr': round(scores['psnr'], 4), 'ssim': round(scores['ssim'], 4),
            'retention': None, 'drop_db': None, 'params': model.params, 'macs': model.macs,
            'fps': None if fps.get(model.name) is None else round(fps[model.name], 2),
            'psnr_per_image': [round(float(p), 4) for p in scores['psnr_per_image']],
        })
    return rows


def add_retention(rows: list[dict[str, Any]], reference: str) -> None:
    """Set ``retention = psnr / psnr_ref`` and ``drop_db = psnr_ref - psnr`` on every row that has a row of model
    ``reference`` on the same dataset, noise level and scale."""
    refs = {(r['dataset'], r['sigma'], r['scale']): r for r in rows if r['model'] == reference}
    for row in rows:
        ref = refs.get((row['dataset'], row['sigma'], row['scale']))
        if ref is not None:
            row['retention'] = round(row['psnr'] / ref['psnr'], 5)
            row['drop_db'] = round(ref['psnr'] - row['psnr'], 4)
