"""COCO mAP of detections against pseudo-labels, computed by pycocotools' ``COCOeval`` (bbox), and its image
bootstrap.

Each image's labels and detections (:class:`~.fastestdet.Detections`, relative boxes) are scaled to its pixel size
and handed to ``COCOeval`` with one area range (all sizes) and ``maxDets`` 100. From its accumulated precision
``P[t, r, k]`` (IoU threshold ``t``, recall point ``r`` of 101, class ``k``; -1 where class ``k`` has no label):

    mAP@0.5 = mean over (r, k) of P[t = 0.5, r, k],   mAP@0.5:0.95 = mean over (t, r, k) of P[t, r, k],

over the entries that are not -1, i.e. averaged over the classes that have labels, as COCO's ``summarize`` does.
Values are in percent.

The bootstrap draws ``n`` of the ``n`` images with replacement (a drawn image counts as often as it is drawn) and
recomputes mAP@0.5 of every version of the images on the same draw, so differences between versions are paired.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .fastestdet import MAX_DETECTIONS, Detections


@dataclass
class DetectionScores:
    """mAP@0.5 and mAP@0.5:0.95 in percent; ``None`` when there is no label to score against."""

    map50: float | None
    map: float | None


def _quiet() -> contextlib.AbstractContextManager:
    """pycocotools prints progress lines on stdout."""
    return contextlib.redirect_stdout(io.StringIO())


def _pixels(detections: Detections, size: tuple[int, int]) -> np.ndarray:
    """``N x 4`` COCO boxes ``(x, y, w, h)`` in pixels of an image of ``size`` (width, height)."""
    width, height = size
    boxes = detections.boxes * np.array([width, height, width, height], np.float64)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _ground_truth(labels: Sequence[Detections], sizes: Sequence[tuple[int, int]], order: Sequence[int],
                  classes: int) -> COCO:
    """A COCO ground truth whose image ``i`` is image ``order[i]`` of ``labels``."""
    images, annotations = [], []
    for image_id, index in enumerate(order):
        images.append({'id': image_id, 'width': sizes[index][0], 'height': sizes[index][1]})
        for box, label in zip(_pixels(labels[index], sizes[index]), labels[index].classes):
            annotations.append({'id': len(annotations) + 1, 'image_id': image_id, 'category_id': int(label) + 1,
                                'bbox': [float(v) for v in box], 'area': float(box[2] * box[3]), 'iscrowd': 0})
    coco = COCO()
    coco.dataset = {'images': images, 'annotations': annotations,
                    'categories': [{'id': k + 1, 'name': str(k)} for k in range(classes)]}
    with _quiet():
        coco.createIndex()
    return coco


def _results(detections: Sequence[Detections], sizes: Sequence[tuple[int, int]], order: Sequence[int]) -> np.ndarray:
    """The detections of the images ``order`` as pycocotools' ``N x 7`` rows ``(image, x, y, w, h, score, class)``."""
    parts = []
    for image_id, index in enumerate(order):
        found = detections[index]
        if len(found):
            parts.append(np.concatenate([np.full((len(found), 1), image_id), _pixels(found, sizes[index]),
                                         found.scores[:, None], found.classes[:, None] + 1], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, 7))


def _evaluate(truth: COCO, results: np.ndarray) -> DetectionScores:
    if not truth.dataset['annotations']:
        return DetectionScores(None, None)
    if not len(results):
        return DetectionScores(0.0, 0.0)
    with _quiet():
        evaluation = COCOeval(truth, truth.loadRes(results), 'bbox')
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0.0, 1e10]], ['all']
        evaluation.params.maxDets = [MAX_DETECTIONS]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval['precision'][:, :, :, 0, 0]
    at_half = precision[0]
    return DetectionScores(100 * float(at_half[at_half > -1].mean()), 100 * float(precision[precision > -1].mean()))


def coco_map(labels: Sequence[Detections], detections: Sequence[Detections], sizes: Sequence[tuple[int, int]],
             classes: int) -> DetectionScores:
    """mAP of ``detections`` against ``labels`` (one entry per image each) on images of ``sizes`` (width, height)
    with ``classes`` classes (see the module docstring)."""
    if not len(labels) == len(detections) == len(sizes):
        raise ValueError(f'{len(labels)} label lists, {len(detections)} detection lists and {len(sizes)} sizes: '
                         'one of each per image.')
    order = range(len(labels))
    return _evaluate(_ground_truth(labels, sizes, order, classes), _results(detections, sizes, order))


def bootstrap_map50(labels: Sequence[Detections], versions: Mapping[str, Sequence[Detections]],
                    sizes: Sequence[tuple[int, int]], classes: int, resamples: int,
                    seed: int = 0) -> dict[str, np.ndarray]:
    """mAP@0.5 of each version's detections on ``resamples`` bootstrap draws of the images (the same draws for
    every version); NaN on a draw without labels."""
    rng = np.random.default_rng(seed)
    draws = {name: np.empty(resamples) for name in versions}
    for b in range(resamples):
        order = rng.integers(0, len(labels), len(labels))
        truth = _ground_truth(labels, sizes, order, classes)
        for name, detections in versions.items():
            value = _evaluate(truth, _results(detections, sizes, order)).map50
            draws[name][b] = np.nan if value is None else value
    return draws
