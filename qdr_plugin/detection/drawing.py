"""Boxes drawn on an image: one colour per class, the class name and score above each box."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .fastestdet import Detections

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_colour(label: int) -> tuple[int, int, int]:
    """A bright BGR colour fixed per class index (golden-ratio hues)."""
    hue = int((label * 0.618034 % 1.0) * 180)
    bgr = cv2.cvtColor(np.array([[[hue, 220, 255]]], np.uint8), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw_detections(image_bgr: np.ndarray, detections: Detections, names: Sequence[str]) -> np.ndarray:
    """A copy of the 8-bit BGR ``image_bgr`` with ``detections`` drawn (line width and text scaled to the image)."""
    canvas = np.ascontiguousarray(image_bgr.copy())
    height, width = canvas.shape[:2]
    thickness = max(1, round(max(height, width) / 300))
    scale = max(0.4, max(height, width) / 900)
    for box, score, label in zip(detections.boxes, detections.scores, detections.classes):
        x1, y1, x2, y2 = (int(round(v)) for v in box * [width, height, width, height])
        colour = class_colour(int(label))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        text = f'{names[int(label)]} {score:.2f}'
        (text_w, text_h), _ = cv2.getTextSize(text, _FONT, scale, 1)
        top = max(y1, text_h + 4)
        cv2.rectangle(canvas, (x1, top - text_h - 4), (x1 + text_w + 2, top), colour, -1)
        cv2.putText(canvas, text, (x1 + 1, top - 3), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas
