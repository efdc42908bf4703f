"""PSNR / SSIM of a restoration network over a basicsr dataset, with the protocol of docs/evaluation.md
(8-bit rounded output, basicsr's ``calculate_psnr`` / ``calculate_ssim``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import tensor2img
from torch.utils.data import Dataset
from tqdm import tqdm


@torch.no_grad()
def evaluate(
    restore: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    crop_border: int = 0,
    test_y_channel: bool = False,
    desc: str = 'eval',
) -> dict[str, object]:
    """Run ``restore`` on every ``lq`` of ``dataset``; mean and per-image PSNR / SSIM against ``gt``."""
    psnrs, ssims = [], []
    for i in tqdm(range(len(dataset)), desc=desc, unit='img', leave=False):
        item = dataset[i]
        output = restore(item['lq'].unsqueeze(0))
        out_img = tensor2img([output.cpu()])
        gt_img = tensor2img([item['gt'].unsqueeze(0)])
        psnrs.append(calculate_psnr(out_img, gt_img, crop_border, test_y_channel=test_y_channel))
        ssims.append(calculate_ssim(out_img, gt_img, crop_border, test_y_channel=test_y_channel))
    return {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims)), 'psnr_per_image': psnrs}
