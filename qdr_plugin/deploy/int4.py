"""4-bit weights stored as INT4: an exported Q/DQ graph rewritten so that each weight whose integers fit
``[-8, 7]`` is an INT4 initializer (two values per byte) behind its ``DequantizeLinear``, ONNX opset 21.

The graph computes the same numbers: ``DequantizeLinear`` of an INT4 tensor gives ``(q - z) * s`` as it does for
INT8. What changes is the file size (the weights take half the bytes of INT8, an eighth of FP32) and the runtimes
that read it: ONNX Runtime (1.18 and later) dequantizes INT4 weights and runs the convolution in float, so the file
is smaller but not faster on a CPU; TensorRT takes INT4 only as weight-only quantization of GEMM / MatMul weights
(blocked), not of convolutions, so an INT4 file is for ONNX Runtime (``--target onnxruntime``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper, version_converter

INT4_OPSET = 21
"""The first ONNX opset whose ``DequantizeLinear`` takes INT4."""
INT4_MIN, INT4_MAX = -8, 7


def pack_int4(values: np.ndarray) -> bytes:
    """Signed 4-bit values, two per byte, the first in the low nibble (ONNX's INT4 layout); odd counts pad with 0."""
    flat = values.astype(np.int8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.int8(0))
    nibbles = (flat & 0x0F).astype(np.uint8)
    return (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()


def _int4_tensor(name: str, values: np.ndarray) -> TensorProto:
    return onnx.helper.make_tensor(name, TensorProto.INT4, values.shape, pack_int4(values), raw=True)


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), 0)


def _at_int4_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` declaring opset :data:`INT4_OPSET`: the declaration raised in place when every node still meets
    its opset-21 schema (the checker's full check), else ONNX's version converter."""
    if _default_opset(model) >= INT4_OPSET:
        return model
    raised = onnx.ModelProto()
    raised.CopyFrom(model)
    for opset in raised.opset_import:
        if opset.domain in ('', 'ai.onnx'):
            opset.version = INT4_OPSET
    try:
        onnx.checker.check_model(raised, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return version_converter.convert_version(model, INT4_OPSET)
    return raised


def _constant_tensors(graph: onnx.GraphProto) -> dict[str, TensorProto]:
    """The tensors of the graph's initializers and Constant nodes, by output name (the protos themselves)."""
    tensors = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == 'Constant':
            for attr in node.attribute:
                if attr.name == 'value':
                    tensors[node.output[0]] = attr.t
    return tensors


def int4_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` at opset :data:`INT4_OPSET` with every INT8 constant that a ``DequantizeLinear`` reads as its
    input (and its zero point) stored as INT4 when all its values fit ``[-8, 7]``; returns the model and how many
    weights it converted. Weights with wider values (8-bit layers of a mixed network) stay INT8."""
    model = _at_int4_opset(model)
    tensors = _constant_tensors(model.graph)
    converted = 0
    for node in model.graph.node:
        weight = tensors.get(node.input[0]) if node.op_type == 'DequantizeLinear' else None
        if weight is None or weight.data_type != TensorProto.INT8:
            continue
        values = numpy_helper.to_array(weight)
        if values.min(initial=0) < INT4_MIN or values.max(initial=0) > INT4_MAX:
            continue
        weight.CopyFrom(_int4_tensor(weight.name, values))
        zero = tensors.get(node.input[2]) if len(node.input) > 2 else None
        if zero is not None and zero.data_type == TensorProto.INT8:
            zero.CopyFrom(_int4_tensor(zero.name, numpy_helper.to_array(zero)))
        converted += 1
    return model, converted
