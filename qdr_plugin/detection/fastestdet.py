"""A FastestDet-format detector: an ONNX file run by ONNX Runtime, its output decoded into boxes here.

FastestDet (an anchor-free single-scale COCO detector, 0.24 M parameters) takes a ``1 x 3 x S x S`` BGR image in
[0, 1] (the picture resized to ``S x S`` with ``cv2.INTER_LINEAR``, no letterbox) and returns one
``1 x (5 + K) x H x W`` map; at cell ``(i, j)`` channel 0 is the objectness ``o`` (after a sigmoid), channels 1..4
the raw box terms ``t_x, t_y, t_w, t_h`` and channels 5.. the ``K`` class probabilities ``p_k`` (after a softmax).
A cell decodes to one box, in coordinates relative to the image (0..1 on both axes):

    c_x = (tanh(t_x) + j) / W,   c_y = (tanh(t_y) + i) / H,   w = sigmoid(t_w),   h = sigmoid(t_h),
    score = o^0.6 * (max_k p_k)^0.4,   class = argmax_k p_k,

then per-class non-maximum suppression (IoU > :data:`NMS_IOU` suppresses the lower score) keeps at most
:data:`MAX_DETECTIONS` boxes per image, highest scores first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms

from qdr_plugin.errors import UserError

NMS_IOU = 0.45
"""Per-class NMS: a box overlapping a higher-scored box of its class by more than this IoU is dropped."""
MAX_DETECTIONS = 100
"""Boxes kept per image (COCO's ``maxDets``)."""
SCORE_FLOOR = 0.05
"""Detections below this score are dropped before NMS (they only lengthen the tail of the precision-recall curve)."""
OBJECTNESS_POWER, CLASS_POWER = 0.6, 0.4


@dataclass
class Detections:
    """The boxes of one image: ``boxes`` ``N x 4`` ``(x1, y1, x2, y2)`` relative to the image (0..1), ``scores``
    ``N`` in [0, 1], ``classes`` ``N`` class indices (0-based, into the detector's names); highest score first."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, score: float) -> Detections:
        """The detections scoring at least ``score``."""
        keep = self.scores >= score
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])


def pseudo_labels(detections: Detections, score: float) -> Detections:
    """The pseudo ground truth of a clean image: its detections scoring at least ``score``."""
    return detections.above(score)


def decode_fastestdet(output: np.ndarray, score_floor: float = SCORE_FLOOR) -> Detections:
    """The detections of one FastestDet output map ``(5 + K) x H x W`` (see the module docstring)."""
    if output.ndim != 3 or output.shape[0] < 6:
        raise ValueError(f'a FastestDet output is (5 + classes) x H x W, got shape {tuple(output.shape)}.')
    _, height, width = output.shape
    rows, cols = np.mgrid[0:height, 0:width]
    objectness, terms, classes = output[0], output[1:5], output[5:]
    best = classes.max(axis=0)
    score = np.clip(objectness, 0, 1) ** OBJECTNESS_POWER * np.clip(best, 0, 1) ** CLASS_POWER
    cx, cy = (np.tanh(terms[0]) + cols) / width, (np.tanh(terms[1]) + rows) / height
    w, h = 1 / (1 + np.exp(-terms[2])), 1 / (1 + np.exp(-terms[3]))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1).reshape(-1, 4)
    score, label = score.reshape(-1), classes.argmax(axis=0).reshape(-1)
    keep = score >= score_floor
    boxes, score, label = np.clip(boxes[keep], 0, 1).astype(np.float32), score[keep].astype(np.float32), label[keep]
    kept = batched_nms(torch.from_numpy(boxes), torch.from_numpy(score), torch.from_numpy(label), NMS_IOU).numpy()
    kept = kept[:MAX_DETECTIONS]  # batched_nms returns indices by decreasing score
    return Detections(boxes[kept], score[kept], label[kept].astype(np.int64))


def read_class_names(path: str | Path) -> list[str]:
    """One class name per non-empty line of ``path`` (FastestDet's ``coco.names``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f'class names file {path} does not exist; give --detect-names FILE (one class per line, '
                        'e.g. coco.names beside FastestDet.onnx).')
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class FastestDet:
    """The detector of an ONNX file in FastestDet's format, run by ONNX Runtime on the CPU.

    ``names``: the class names file (default ``coco.names`` beside the ONNX file). Loading checks the contract of
    the module docstring on a blank image and stops with a :class:`~qdr_plugin.errors.UserError` naming what
    differs.
    """

    def __init__(self, path: str | Path, names: str | Path | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f'detector {self.path} does not exist; give --detect PATH, a FastestDet ONNX file '
                            '(../shared/weights/FastestDet/FastestDet.onnx).')
        self.names = read_class_names(self.path.parent / 'coco.names' if names is None else names)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=['CPUExecutionProvider'])
        except Exception as error:  # noqa: BLE001  (ONNX Runtime raises its own exception types)
            raise UserError(f'detector {self.path}: ONNX Runtime cannot load it '
                            f'({str(error).splitlines()[0]}).') from error
        self.input_name = self.session.get_inputs()[0].name
        self.size = self._input_size()
        self._check_output()

    def _input_size(self) -> int:
        shape = self.session.get_inputs()[0].shape
        if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3]:
            raise UserError(f'detector {self.path}: its input is {shape}, not 1 x 3 x S x S with a fixed S; give a '
                            'FastestDet-format ONNX file.')
        return int(shape[2])

    def _check_output(self) -> None:
        output = self._run(np.zeros((self.size, self.size, 3), np.uint8))
        classes = output.shape[0] - 5
        sums = output[5:].sum(axis=0)
        if classes != len(self.names) or not np.allclose(sums, 1, atol=1e-3) or not (0 <= output[0]).all() \
                or not (output[0] <= 1).all():
            raise UserError(f'detector {self.path}: its output ({output.shape[0]} channels) is not FastestDet\'s '
                            f'(objectness in [0, 1], 4 box terms, {len(self.names)} class probabilities summing to '
                            '1, as many as the class names file has lines); give a FastestDet-format ONNX file and '
                            'its names.')

    def _run(self, image_bgr: np.ndarray) -> np.ndarray:
        resized = cv2.resize(image_bgr, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        x = resized.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        return self.session.run(None, {self.input_name: x})[0][0]

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        """The detections of an 8-bit ``H x W x 3`` BGR image (as ``cv2.imread`` and ``tensor2img`` give it)."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f'the detector takes 8-bit H x W x 3 BGR images, got {image_bgr.dtype} '
                             f'{tuple(image_bgr.shape)}.')
        return decode_fastestdet(self._run(image_bgr))
