"""Post-training quantization (PTQ) baseline: an FP32 ONNX model -> INT8 Q/DQ ONNX with ONNX Runtime's
``quantize_static``, calibrated on the arrays it is given (``basicsr ptq``: noisy crops of the options' training set,
:func:`qdr_plugin.data.calibration.calibration_inputs`).

Two targets, as in :mod:`qdr_plugin.deploy.onnx_export`:

``onnxruntime``
    ONNX Runtime's own defaults for CPU: uint8 asymmetric activations, int8 symmetric per-channel weights, int32
    biases (what ONNX Runtime runs fastest, see docs/deployment.md); then, as in the QDR export, a convolution
    with too few output channels for ONNX Runtime's fast integer kernel gets zero filters
    (:func:`qdr_plugin.deploy.graph_rewrites.widen_narrow_convolutions`), so both files run the same kernels.
``tensorrt``
    int8 symmetric activations and weights (zero point 0), per-channel weight scales, float biases (TensorRT takes
    no int32 DequantizeLinear: ``QuantizeBias: False``), and no Q/DQ on the input of an up-sampling op
    (DepthToSpace / Resize / Upsample): ``quantize_static`` quantizes the output of the op feeding it (e.g. the
    global residual Add before the final pixel-shuffle) and has no per-tensor switch to leave one tensor float, so
    that one Q/DQ pair is bypassed after quantization
    (:func:`qdr_plugin.deploy.graph_rewrites.float_upsampling_inputs`). The result passes ``check_onnx(path,
    'tensorrt')``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from qdr_plugin.utils.atomic_write import atomic_output

from .graph_rewrites import float_upsampling_inputs, widen_narrow_convolutions
from .no_vnni import unsigned_saturating_weights
from .onnx_export import TARGETS

METHODS = ('minmax', 'percentile', 'entropy')


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


def quantize_onnx_ptq(
    fp32_onnx: str | Path,
    out: str | Path,
    calibration: Iterable[np.ndarray],
    method: str = 'minmax',
    target: str = 'onnxruntime',
    no_vnni: bool = False,
) -> Path:
    """Quantize ``fp32_onnx`` (input ``input``) to an INT8 Q/DQ model at ``out`` with ``quantize_static``,
    calibrating with ``method`` (``minmax`` / ``percentile`` (99.999) / ``entropy``) on the 1 x C x H x W float32
    arrays of ``calibration``, for ``target`` (``onnxruntime`` or ``tensorrt``, see the module docstring). ``out`` is
    written atomically (a complete new file or the previous content). ``no_vnni`` (``onnxruntime``): int8 weights
    that would saturate a CPU without VNNI are stored as uint8, as ``basicsr export --no-vnni`` does
    (:func:`~qdr_plugin.deploy.no_vnni.unsigned_saturating_weights`)."""
    methods = {'minmax': CalibrationMethod.MinMax, 'percentile': CalibrationMethod.Percentile,
               'entropy': CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f'calibration method must be one of {METHODS}, got {method!r}.')
    if target not in TARGETS:
        raise ValueError(f'target must be one of {TARGETS}, got {target!r}.')
    if no_vnni and target != 'onnxruntime':
        raise ValueError('--no-vnni is for --target onnxruntime (TensorRT takes int8 weights only).')
    fp32_onnx, out = Path(fp32_onnx), Path(out)
    if not fp32_onnx.is_file():
        raise FileNotFoundError(f'FP32 ONNX model {fp32_onnx} does not exist.')
    if target == 'tensorrt':
        activation_type = QuantType.QInt8
        extra_options = {'ActivationSymmetric': True, 'WeightSymmetric': True, 'QuantizeBias': False}
    else:
        activation_type = QuantType.QUInt8
        extra_options = {}
    with tempfile.TemporaryDirectory(prefix='qdr_ptq_') as tmp, atomic_output(out) as written:
        prepared = Path(tmp) / 'prepared.onnx'
        # ONNX shape inference + ONNX Runtime's basic graph optimizations (they fold the exporter's Identity-shared
        # biases back into initializers, so each Conv gets its own bias); the symbolic shape inference gives up on
        # the in-graph padding of dynamic H, W ("Incomplete symbolic shape inference"), so it is skipped
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(written), ArrayReader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=activation_type, weight_type=QuantType.QInt8, calibrate_method=methods[method],
            extra_options=extra_options,
        )
        model = onnx.load(str(written))
        rewrite = float_upsampling_inputs if target == 'tensorrt' else widen_narrow_convolutions
        if rewrite(model) + (unsigned_saturating_weights(model) if no_vnni else 0):
            onnx.save(model, str(written))
    return out
