r"""``QDRMetric``: the INT8 student's PSNR / SSIM, the FP32 teacher's, and their difference.

Each image is scored as the BasicSR front scores it: the output and the ground truth go through basicsr's
``tensor2img`` (clamped to [0, 1], rounded to uint8), then ``calculate_psnr`` / ``calculate_ssim`` with
``crop_border`` and ``test_y_channel``, averaged over the images. The teacher is frozen, so its scores
(``PSNR_fp32``, ``SSIM_fp32``) are computed on the first evaluation that has it and reused after; reported with
``PSNR_diff = PSNR - PSNR_fp32`` (likewise SSIM) whenever known.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import tensor2img
from mmengine.evaluator import BaseMetric

from .registry import METRICS

__all__ = ['QDRMetric']


@METRICS.register_module()
class QDRMetric(BaseMetric):
    """PSNR and SSIM of ``pred`` (and of ``pred_fp32``, once) against ``gt``.

    Args:
        crop_border: pixels cut from each border before scoring.
        test_y_channel: score the Y channel of colour images.
    """

    default_prefix = ''

    def __init__(self, crop_border: int = 0, test_y_channel: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.crop_border, self.test_y_channel = crop_border, test_y_channel
        self.fp32: dict[str, float] | None = None

    def _score(self, output, gt) -> tuple[float, float]:
        img, ref = tensor2img([output]), tensor2img([gt])
        kwargs = {'crop_border': self.crop_border, 'test_y_channel': self.test_y_channel}
        return float(calculate_psnr(img, ref, **kwargs)), float(calculate_ssim(img, ref, **kwargs))

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            result = dict(zip(('PSNR', 'SSIM'), self._score(sample['pred'], sample['gt'])))
            if 'pred_fp32' in sample:
                result.update(zip(('PSNR_fp32', 'SSIM_fp32'), self._score(sample['pred_fp32'], sample['gt'])))
            self.results.append(result)

    def compute_metrics(self, results: list[dict[str, float]]) -> dict[str, float]:
        metrics = {k: float(np.mean([r[k] for r in results])) for k in ('PSNR', 'SSIM')}
        if all('PSNR_fp32' in r for r in results):
            self.fp32 = {k: float(np.mean([r[k] for r in results])) for k in ('PSNR_fp32', 'SSIM_fp32')}
        if self.fp32 is not None:
            metrics.update(self.fp32)
            metrics['PSNR_diff'] = metrics['PSNR'] - self.fp32['PSNR_fp32']
            metrics['SSIM_diff'] = metrics['SSIM'] - self.fp32['SSIM_fp32']
        return metrics
