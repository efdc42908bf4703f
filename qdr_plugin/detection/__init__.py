"""Downstream detection: a FastestDet-format ONNX detector run by ONNX Runtime (:mod:`.fastestdet`), COCO mAP of
detections against pseudo-labels with pycocotools (:mod:`.coco_map`) and boxes drawn on images (:mod:`.drawing`).
Plain ONNX Runtime, NumPy, torchvision and pycocotools: independent of BasicSR; ``basicsr bench --detect`` is the
front (docs/evaluation.md, "Downstream detection")."""

from .coco_map import DetectionScores, bootstrap_map50, coco_map
from .drawing import draw_detections
from .fastestdet import Detections, FastestDet, decode_fastestdet, pseudo_labels

__all__ = [
    'DetectionScores', 'Detections', 'FastestDet', 'bootstrap_map50', 'coco_map', 'decode_fastestdet',
    'draw_detections', 'pseudo_labels',
]
