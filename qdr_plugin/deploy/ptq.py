"""Post-training quantization (PTQ) baseline: an FP32 ONNX model -> INT8 Q/DQ ONNX with ONNX Runtime's
``quantize_static``, calibrated on images of the options' training set.

Two targets, as in :mod:`qdr_plugin.deploy.onnx_export`:

``onnxruntime``
    ONNX Runtime's own defaults for CPU: uint8 asymmetric activations, int8 symmetric per-channel weights, int32
    biases (what ONNX Runtime runs fastest, DESIGN.md section 4); then, as in the QDR export, a convolution with
    too few output channels for ONNX Runtime's fast integer kernel gets zero filters
    (:func:`qdr_plugin.deploy.onnx_export.widen_narrow_convolutions`), so both files run the same kernels.
``tensorrt``
    int8 symmetric activations and weights (zero point 0), per-channel weight scales, float biases (TensorRT takes
    no int32 DequantizeLinear: ``QuantizeBias: False``), and no Q/DQ on the input of an up-sampling op
    (DepthToSpace / Resize / Upsample): ``quantize_static`` quantizes the output of the op feeding it (e.g. the
    global residual Add before the final pixel-shuffle) and has no per-tensor switch to leave one tensor float, so
    that one Q/DQ pair is bypassed after quantization (:func:`float_upsampling_inputs`). The result passes
    ``check_onnx(path, 'tensorrt')``.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from .check import UP_SAMPLING
from .onnx_export import TARGETS, widen_narrow_convolutions

METHODS = ('minmax', 'percentile', 'entropy')
CALIBRATION_SEED = 0


class ArrayReader(CalibrationDataReader):
    """A ``CalibrationDataReader`` over 1 x C x H x W float32 arrays, fed to the input ``input``."""

    def __init__(self, arrays: Iterable[np.ndarray], input_name: str = 'input'):
        self._arrays: Iterator[np.ndarray] = iter(arrays)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        array = next(self._arrays, None)
        if array is None:
            return None
        array = np.asarray(array, dtype=np.float32)
        return {self._name: array[None] if array.ndim == 3 else array}


def calibration_inputs(dataset_opt: dict[str, Any], count: int, size: int | None = None) -> list[np.ndarray]:
    """``count`` noisy inputs (``lq``), each 1 x C x H x W float32, from the training dataset ``dataset_opt``
    (a ``datasets: train:`` block; ``phase`` defaults to ``'train'``, ``size`` overrides ``gt_size``).

    Deterministic: python, numpy and torch are seeded with a fixed seed before drawing (their global states are
    restored afterwards), images are taken in a seeded random order, cycling when ``count`` exceeds the set.
    """
    from basicsr.data import build_dataset

    if count < 1:
        raise ValueError(f'the number of calibration images must be >= 1, got {count}.')
    opt = dict(dataset_opt)
    opt.setdefault('phase', 'train')
    opt.setdefault('name', 'calibration')
    if size is not None:
        opt['gt_size'] = int(size)
    dataset = build_dataset(opt)
    if len(dataset) == 0:
        raise ValueError(f"the calibration dataset '{opt['name']}' is empty.")
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        random.seed(CALIBRATION_SEED)
        np.random.seed(CALIBRATION_SEED)
        torch.manual_seed(CALIBRATION_SEED)
        order = np.random.default_rng(CALIBRATION_SEED).permutation(len(dataset))
        arrays = []
        for i in range(count):
            lq = dataset[int(order[i % len(order)])]['lq']
            lq = lq.numpy() if isinstance(lq, torch.Tensor) else np.asarray(lq)
            arrays.append(np.ascontiguousarray(lq[None] if lq.ndim == 3 else lq, dtype=np.float32))
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
    return arrays


def float_upsampling_inputs(model: onnx.ModelProto) -> int:
    """Feed every up-sampling op (DepthToSpace / Resize / Upsample) that reads ``DequantizeLinear(QuantizeLinear(t))``
    the float ``t`` instead, and drop the Q/DQ nodes left without consumers. Returns the number of inputs changed."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    changed = 0
    for node in graph.node:
        if node.op_type not in UP_SAMPLING:
            continue
        dq = producers.get(node.input[0])
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == 'DequantizeLinear' else None
        if q is not None and q.op_type == 'QuantizeLinear':
            node.input[0] = q.input[0]
            changed += 1
    while True:  # remove the Q/DQ nodes nothing reads any more
        used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        dead = [n for n in graph.node
                if n.op_type in ('QuantizeLinear', 'DequantizeLinear') and not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return changed


def quantize_onnx_ptq(
    fp32_onnx: str | Path,
    out: str | Path,
    calibration: Iterable[np.ndarray],
    method: str = 'minmax',
    target: str = 'onnxruntime',
) -> Path:
    """Quantize ``fp32_onnx`` (input ``input``) to an INT8 Q/DQ model at ``out`` with ``quantize_static``,
    calibrating with ``method`` (``minmax`` / ``percentile`` (99.999) / ``entropy``) on the 1 x C x H x W float32
    arrays of ``calibration``, for ``target`` (``onnxruntime`` or ``tensorrt``, see the module docstring)."""
    methods = {'minmax': CalibrationMethod.MinMax, 'percentile': CalibrationMethod.Percentile,
               'entropy': CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f'calibration method must be one of {METHODS}, got {method!r}.')
    if target not in TARGETS:
        raise ValueError(f'target must be one of {TARGETS}, got {target!r}.')
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    if not fp32_onnx.is_file():
        raise FileNotFoundError(f'FP32 ONNX model {fp32_onnx} does not exist.')
    out.parent.mkdir(parents=True, exist_ok=True)
    if target == 'tensorrt':
        activation_type = QuantType.QInt8
        extra_options = {'ActivationSymmetric': True, 'WeightSymmetric': True, 'QuantizeBias': False}
    else:
        activation_type = QuantType.QUInt8
        extra_options = {}
    with tempfile.TemporaryDirectory(prefix='qdr_ptq_') as tmp:
        prepared = Path(tmp) / 'prepared.onnx'
        # ONNX shape inference + ONNX Runtime's basic graph optimizations (they fold the exporter's Identity-shared
        # biases back into initializers, so each Conv gets its own bias); the symbolic shape inference gives up on
        # the in-graph padding of dynamic H, W ("Incomplete symbolic shape inference"), so it is skipped
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(out), ArrayReader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=activation_type, weight_type=QuantType.QInt8, calibrate_method=methods[method],
            extra_options=extra_options,
        )
    model = onnx.load(str(out))
    rewrite = float_upsampling_inputs if target == 'tensorrt' else widen_narrow_convolutions
    if rewrite(model):
        onnx.save(model, str(out))
    return out
