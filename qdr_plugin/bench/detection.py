"""Downstream detection of ``basicsr bench --detect`` (docs/evaluation.md, "Downstream detection").

For every set (clean images with degraded inputs) the detector runs on the clean image, on the degraded input and
on every model's 8-bit output. Its boxes on the clean image scoring at least ``label_score`` are the pseudo-labels;
each version's detections (all scores down to the detector's floor) are scored against them with COCO mAP
(:func:`qdr_plugin.detection.coco_map`), so the clean image scores 100 by construction. Per model:

    gain = mAP@0.5(model output) - mAP@0.5(degraded input),
    gain kept = gain(model) / gain(reference),      when gain(reference) > 0,

the reference being the FP32 model. A set with fewer than ``min_boxes`` pseudo-boxes is named as too small for a
stable mAP and gets no numbers; the image bootstrap (``resamples`` draws) gives the spread of each mAP@0.5, of each
gain and of each model's mAP@0.5 minus the reference's (paired: the same draws for every version).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from basicsr.utils import tensor2img
from tqdm import tqdm

from qdr_plugin.detection import Detections, FastestDet, bootstrap_map50, coco_map, draw_detections, pseudo_labels

from .models import BenchModel
from .pictures import side_by_side, write_picture
from .protocol import BenchSet
from .report import Column
from .runner import Outputs

DEFAULT_DETECTOR = Path(__file__).resolve().parents[2].parent / 'shared' / 'weights' / 'FastestDet' / 'FastestDet.onnx'
"""``../shared/weights/FastestDet/FastestDet.onnx`` next to the repository."""
DETECT_PICTURES = 'detect_pictures'
"""The sub-folder of ``--out`` the pictures with boxes go to."""
CLEAN, DEGRADED = 'clean', 'degraded'
"""The two versions of a set's images besides the models' outputs (names a model may not take)."""
DETECT_COLUMNS: list[Column] = [
    ('set', 'set', ''), ('version', 'images', ''), ('precision', 'precision', ''),
    ('pseudo_boxes', 'pseudo-boxes', 'd'), ('boxes', 'boxes', 'd'), ('map50', 'mAP@0.5', '.1f'),
    ('map50_std', '± (bootstrap)', '.1f'), ('map', 'mAP@0.5:0.95', '.1f'), ('gain50', 'gain@0.5', '+.1f'),
    ('gain50_std', '± gain', '.1f'), ('gain_kept', 'gain kept', '.1%'), ('vs_reference_std', '± vs reference', '.1f'),
]


@dataclass
class DetectionSettings:
    """``label_score``: a clean-image detection at or above it is a pseudo-label (and a drawn box); ``min_boxes``:
    fewest pseudo-boxes for a reported mAP; ``resamples``: bootstrap draws for the spreads (0: none)."""

    label_score: float = 0.5
    min_boxes: int = 100
    resamples: int = 100


class DetectionCollector:
    """An observer of :func:`~qdr_plugin.bench.runner.run_benchmark`: runs the detector on every model output."""

    def __init__(self, detector: FastestDet) -> None:
        self.detector = detector
        self.found: dict[tuple[str, str], dict[int, Detections]] = {}

    def __call__(self, bench_set: BenchSet, model: str, index: int, output: np.ndarray) -> None:
        self.found.setdefault((bench_set.label, model), {})[index] = self.detector(output)

    def of(self, bench_set: BenchSet, model: str) -> list[Detections]:
        """The detections on ``model``'s outputs of ``bench_set``, in image order."""
        found = self.found.get((bench_set.label, model), {})
        if sorted(found) != list(range(len(bench_set.images))):
            raise RuntimeError(f'{model} on {bench_set.label}: {len(found)} of {len(bench_set.images)} outputs seen by '
                               'the detector.')
        return [found[i] for i in range(len(bench_set.images))]


def check_detection_run(sets: Sequence[BenchSet], models: Sequence[BenchModel]) -> None:
    """``ValueError`` naming the fix when a set cannot give pseudo-labels (no clean image, not RGB) or a model takes
    a name of the table's fixed versions."""
    for bench_set in sets:
        if not bench_set.has_gt:
            raise ValueError(f'--detect: {bench_set.name} has no clean images to take pseudo-labels from; leave it out '
                             'of --datasets.')
        if bench_set.channels != 3:
            raise ValueError(f'--detect: {bench_set.name} is gray and the detector takes RGB images; bench a colour '
                             'set (CBSD68, McMaster, or a task set).')
    for model in models:
        if model.name in (CLEAN, DEGRADED):
            raise ValueError(f'--model {model.name}=...: with --detect, "{CLEAN}" and "{DEGRADED}" name the clean and '
                             'degraded images; give the model another name.')


@dataclass
class SetViews:
    """What the detector sees of one set apart from the models: the clean images and the degraded inputs."""

    clean: list[Detections]
    degraded: list[Detections]
    sizes: list[tuple[int, int]]


def _set_views(detector: FastestDet, bench_set: BenchSet) -> SetViews:
    clean, degraded, sizes = [], [], []
    for index in tqdm(range(len(bench_set.dataset)), desc=f'detect {bench_set.label}', unit='img', leave=False):
        item = bench_set.dataset[index]
        gt, lq = tensor2img([item['gt'].unsqueeze(0)]), tensor2img([item['lq'].unsqueeze(0)])
        clean.append(detector(gt))
        degraded.append(detector(lq))
        sizes.append((gt.shape[1], gt.shape[0]))
    return SetViews(clean, degraded, sizes)


def _spread(draws: dict[str, np.ndarray], name: str, base: str | None = None) -> float | None:
    """Bootstrap standard deviation of ``name``'s mAP@0.5, or of its difference to ``base``'s."""
    if not draws:
        return None
    values = draws[name] - draws[base] if base is not None else draws[name]
    return round(float(np.nanstd(values)), 2)


def _set_rows(bench_set: BenchSet, views: SetViews, models: Sequence[BenchModel], collector: DetectionCollector,
              reference: str | None, settings: DetectionSettings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of one set (clean, degraded, each model) and its summary."""
    labels = [pseudo_labels(found, settings.label_score) for found in views.clean]
    versions = {CLEAN: views.clean, DEGRADED: views.degraded,
                **{m.name: collector.of(bench_set, m.name) for m in models}}
    precision = {CLEAN: '-', DEGRADED: '-', **{m.name: m.precision for m in models}}
    boxes = sum(len(label) for label in labels)
    present = {int(c) for label in labels for c in label.classes}
    stable = boxes >= settings.min_boxes
    count = len(collector.detector.names)
    scores = {name: coco_map(labels, found, views.sizes, count) for name, found in versions.items()} if stable else {}
    draws = (bootstrap_map50(labels, versions, views.sizes, count, settings.resamples)
             if stable and settings.resamples else {})
    ref_gain = ref_gain_std = None
    if stable and reference is not None:
        ref_gain = scores[reference].map50 - scores[DEGRADED].map50
        ref_gain_std = _spread(draws, reference, DEGRADED)
    rows = []
    for name, found in versions.items():
        row = {'set': bench_set.label, 'dataset': bench_set.name, 'version': name,
               'precision': precision[name], 'images': len(bench_set.images), 'pseudo_boxes': boxes,
               'boxes': sum(len(f.above(settings.label_score)) for f in found), 'stable': stable,
               'map50': None, 'map50_std': None, 'map': None, 'gain50': None, 'gain50_std': None, 'gain_kept': None,
               'vs_reference_std': None}
        if stable:
            gain = scores[name].map50 - scores[DEGRADED].map50
            row.update(map50=round(scores[name].map50, 2), map50_std=_spread(draws, name),
                       map=round(scores[name].map, 2))
            if name not in (CLEAN, DEGRADED):
                row.update(gain50=round(gain, 2), gain50_std=_spread(draws, name, DEGRADED))
                if reference is not None and name != reference:
                    row['vs_reference_std'] = _spread(draws, name, reference)
                if ref_gain is not None and ref_gain > 0:
                    row['gain_kept'] = round(gain / ref_gain, 4)
        rows.append(row)
    summary = {'set': bench_set.label, 'images': len(bench_set.images),
               'pseudo_boxes': boxes, 'class_count': len(present),
               'classes': sorted(collector.detector.names[c] for c in present), 'stable': stable,
               'reference_gain50': None if ref_gain is None else round(ref_gain, 2),
               'reference_gain50_std': ref_gain_std}
    return rows, summary


Rows = list[dict[str, Any]]


def detection_rows(sets: Sequence[BenchSet], models: Sequence[BenchModel], collector: DetectionCollector,
                   reference: str | None, settings: DetectionSettings) -> tuple[Rows, Rows, dict[str, SetViews]]:
    """The detection rows of every set, the per-set summaries, and the clean / degraded detections by set label."""
    rows, summaries, views = [], [], {}
    for bench_set in sets:
        views[bench_set.label] = _set_views(collector.detector, bench_set)
        set_rows, summary = _set_rows(bench_set, views[bench_set.label], models, collector, reference, settings)
        rows += set_rows
        summaries.append(summary)
    return rows, summaries, views


def detection_note(summaries: Sequence[dict[str, Any]], reference: str | None, settings: DetectionSettings,
                   detector: FastestDet) -> str:
    """The text under the detection table: the protocol in one paragraph, then one line per set."""
    head = (f'Pseudo-labels: {detector.path.name}\'s boxes scoring >= {settings.label_score:g} on the clean image; '
            'every version is scored against them with COCO mAP (pycocotools, %), so the clean image scores 100 by '
            'construction. This measures agreement with the detector\'s view of the clean image, not accuracy '
            'against human boxes. gain = mAP@0.5 - mAP@0.5 of the degraded input'
            + (f'; gain kept = gain / gain of {reference}' if reference else '')
            + (f'; ± = standard deviation over {settings.resamples} image bootstrap draws.' if settings.resamples
               else '.'))
    lines = [head]
    for s in summaries:
        where = f'{s["set"]}: {s["pseudo_boxes"]} pseudo-boxes of {s["class_count"]} classes ' \
                f'on {s["images"]} images'
        if not s['stable']:
            lines.append(f'{where}: too few pseudo-boxes for a stable mAP (fewer than {settings.min_boxes}); no mAP '
                         'is reported for this set.')
        elif s['reference_gain50'] is not None and s['reference_gain50'] <= 0:
            lines.append(f'{where}: restoration by {reference} does not help the detector here '
                         f'(gain {s["reference_gain50"]:+.1f} mAP@0.5); no gain kept is reported.')
        elif s['reference_gain50_std'] is not None and s['reference_gain50'] < 2 * s['reference_gain50_std']:
            lines.append(f'{where}: the gain of {reference} ({s["reference_gain50"]:+.1f} ± '
                         f'{s["reference_gain50_std"]:.1f} mAP@0.5) is within two bootstrap standard deviations of '
                         'zero: not a measurable help to the detector, and the gain kept is a ratio of noise.')
        else:
            lines.append(f'{where}.')
    return '\n\n'.join(lines)


def detection_picture_names(sets: Sequence[BenchSet], count: int) -> list[str]:
    """The files (relative to ``--out``) that :func:`write_detection_pictures` writes."""
    return [f'{DETECT_PICTURES}/{s.label}_{Path(image).stem}.jpg' for s in sets for image in s.images[:count]]


def write_detection_pictures(folder: str | Path, bench_set: BenchSet, views: SetViews, models: Sequence[str],
                             collector: DetectionCollector, outputs: Outputs, settings: DetectionSettings,
                             count: int) -> list[Path]:
    """One JPEG per image of the first ``count``: the clean image with its pseudo-labels, the degraded input and each
    model's output with the detector's boxes scoring >= ``label_score``, side by side."""
    written, names = [], collector.detector.names
    detections = {m: collector.of(bench_set, m) for m in models}
    for index in range(min([count, len(bench_set.images), *(len(outputs[bench_set.label, m]) for m in models)])):
        item = bench_set.dataset[index]
        gt, lq = tensor2img([item['gt'].unsqueeze(0)]), tensor2img([item['lq'].unsqueeze(0)])
        size = (gt.shape[1], gt.shape[0])
        shown = [(gt, views.clean[index], CLEAN), (lq, views.degraded[index], DEGRADED)]
        shown += [(outputs[bench_set.label, m][index], detections[m][index], m) for m in models]
        panels = []
        for img, found, name in shown:
            kept = found.above(settings.label_score)
            what = 'pseudo-labels' if name == CLEAN else 'boxes'
            panels.append((draw_detections(img, kept, names), f'{name}: {len(kept)} {what}'))
        path = Path(folder) / DETECT_PICTURES / f'{bench_set.label}_{Path(bench_set.images[index]).stem}.jpg'
        written.append(write_picture(path, side_by_side(panels, size)))
    return written
