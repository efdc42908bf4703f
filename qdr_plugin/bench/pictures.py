"""Side-by-side pictures of a benchmark: for the first images of each set, the input, each model's output and the
ground truth in one PNG (``pictures/<set label>_<image stem>.png``), each panel under a label with the model's name
and its PSNR on that image (the set's protocol; for a set without ground truth, against the reference's output).

Every panel is shown at the output's size; an image whose longer side exceeds :data:`MAX_SIDE` pixels is
downscaled (``cv2.INTER_AREA``) for the picture, and a super-resolution input is enlarged (nearest neighbour) to
the output's size. Panels are widened to fit their label.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img

from qdr_plugin.utils.atomic_write import atomic_write_bytes

from .protocol import BenchSet
from .report import GROUND_TRUTH
from .runner import Outputs

PICTURES = 'pictures'
"""The sub-folder of ``--out`` the pictures go to."""
MAX_SIDE = 512
"""Longest panel side in pixels."""
_FONT, _FONT_SCALE, _BAR, _MARGIN, _GAP = cv2.FONT_HERSHEY_SIMPLEX, 0.5, 24, 6, 4


def picture_names(sets: Sequence[BenchSet], count: int) -> list[str]:
    """The files (relative to ``--out``) that :func:`write_pictures` writes for the first ``count`` images of
    ``sets``."""
    return [f'{PICTURES}/{s.label}_{Path(image).stem}.png' for s in sets for image in s.images[:count]]


def _panel(img: np.ndarray, label: str, size: tuple[int, int]) -> np.ndarray:
    """``img`` (a ``tensor2img`` image, gray or BGR) resized to ``size`` (width, height) under a white bar with
    ``label``, on a canvas at least as wide as the label."""
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
    if (img.shape[1], img.shape[0]) != size:
        shrink = img.shape[1] > size[0]
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_NEAREST)
    text_width = cv2.getTextSize(label, _FONT, _FONT_SCALE, 1)[0][0]
    width = max(size[0], text_width + 2 * _MARGIN)
    canvas = np.full((size[1] + _BAR, width, 3), 255, np.uint8)
    left = (width - size[0]) // 2
    canvas[_BAR:, left:left + size[0]] = img
    cv2.putText(canvas, label, (_MARGIN, _BAR - 8), _FONT, _FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def side_by_side(panels: Sequence[tuple[np.ndarray, str]], size: tuple[int, int]) -> np.ndarray:
    """The labelled panels ``(image, label)`` left to right, :data:`_GAP` white pixels apart; ``size`` (width,
    height) is the images' common size before the :data:`MAX_SIDE` limit."""
    factor = min(1.0, MAX_SIDE / max(size))
    shown = (max(1, round(size[0] * factor)), max(1, round(size[1] * factor)))
    parts = []
    for img, label in panels:
        parts += [_panel(img, label, shown), np.full((shown[1] + _BAR, _GAP, 3), 255, np.uint8)]
    return np.concatenate(parts[:-1], axis=1)


def _row(rows: Sequence[dict[str, Any]], bench_set: BenchSet, model: str) -> dict[str, Any]:
    return next(r for r in rows if r['model'] == model and (r['dataset'], r['sigma'], r['scale']) == bench_set.key)


def _label(row: dict[str, Any], index: int, reference: str | None) -> str:
    """``model: 31.20 dB``, ``... dB vs <reference>`` on a set without ground truth, ``<reference> (reference)``."""
    if row['psnr_per_image'] is None:
        return f'{row["model"]} (reference)'
    against = '' if row['psnr_against'] == GROUND_TRUTH else f' vs {reference}'
    return f'{row["model"]}: {row["psnr_per_image"][index]:.2f} dB{against}'


def write_pictures(folder: str | Path, bench_set: BenchSet, models: Sequence[str], rows: Sequence[dict[str, Any]],
                   outputs: Outputs, reference: str | None) -> list[Path]:
    """Write the pictures of ``bench_set`` (one per image with kept outputs, see the module docstring) into
    ``<folder>/pictures``; ``rows`` give the per-image PSNRs, ``outputs`` the 8-bit outputs of ``models``."""
    written = []
    kept = {m: outputs[bench_set.label, m] for m in models}
    for index in range(min(len(k) for k in kept.values())):
        item = bench_set.dataset[index]
        first = kept[models[0]][index]
        size = (first.shape[1], first.shape[0])
        lq = tensor2img([item['lq'].unsqueeze(0)])
        panels = [(lq, 'input')]
        if bench_set.has_gt:
            gt = tensor2img([item['gt'].unsqueeze(0)])
            if lq.shape == gt.shape:
                psnr = calculate_psnr(lq, gt, bench_set.crop_border, test_y_channel=bench_set.test_y_channel)
                panels = [(lq, f'input: {psnr:.2f} dB')]
        panels += [(kept[m][index], _label(_row(rows, bench_set, m), index, reference)) for m in models]
        if bench_set.has_gt:
            panels.append((gt, 'ground truth'))
        path = Path(folder) / PICTURES / f'{bench_set.label}_{Path(bench_set.images[index]).stem}.png'
        written.append(write_picture(path, side_by_side(panels, size)))
    return written


def write_picture(path: Path, image: np.ndarray) -> Path:
    """Encode ``image`` in the format of ``path``'s suffix (JPEG at quality 90) and write it atomically."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix.lower() in ('.jpg', '.jpeg') else []
    ok, data = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise OSError(f'cv2 could not encode the picture {path.name}.')
    atomic_write_bytes(path, data.tobytes())
    return path
