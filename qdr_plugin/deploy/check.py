"""Validate an exported INT8 ONNX file: ``onnx.checker``, the I/O contract, and TensorRT's explicit-quantization
rules for the ``tensorrt`` target; count the operators. Also: which convolutions ONNX Runtime really runs as
integer kernels (from its optimized graph)."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from .graph_rewrites import UP_SAMPLING, constant_values, graph_links

FORBIDDEN_FOR_TENSORRT = ('QLinearConv', 'ConvInteger', 'MatMulInteger', 'DynamicQuantizeLinear', 'QLinearMatMul')


@dataclass
class CheckReport:
    """What :func:`check_onnx` found: per-op counts and the rule violations (empty when the file is fine)."""

    path: str
    target: str | None
    op_counts: Counter
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        ops = ', '.join(f'{op}: {n}' for op, n in sorted(self.op_counts.items()))
        verdict = 'OK' if not self.problems else f'{len(self.problems)} problem(s)'
        lines = [f'{self.path} [{self.target or "any target"}]: {verdict}', f'  ops: {ops}']
        lines += [f'  - {p}' for p in self.problems]
        return '\n'.join(lines)


def _check_io(model: onnx.ModelProto, problems: list[str]) -> None:
    for kind, values, name in (('input', model.graph.input, 'input'), ('output', model.graph.output, 'output')):
        if len(values) != 1 or values[0].name != name:
            problems.append(f'expected one {kind} named {name!r}, found {[v.name for v in values]}')
            continue
        tensor = values[0].type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT or len(tensor.shape.dim) != 4:
            problems.append(f'{kind} {name!r} must be a float32 N x C x H x W tensor')
            continue
        dims = tensor.shape.dim
        if any(dims[i].HasField('dim_value') for i in (0, 2, 3)):
            problems.append(f'{kind} {name!r} must have dynamic N, H and W')


def _requantized(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]]) -> bool:
    """Whether ``node``'s result is quantized again (an INT8 residual), not just carried to the float output."""
    return any(c.op_type == 'QuantizeLinear' for out in node.output for c in consumers.get(out, []))


def _check_tensorrt(graph: onnx.GraphProto, problems: list[str]) -> None:
    constants = constant_values(graph)
    producers, consumers = graph_links(graph)

    def from_dq(name: str) -> onnx.NodeProto | None:
        node = producers.get(name)
        return node if node is not None and node.op_type == 'DequantizeLinear' else None

    for node in graph.node:
        if node.op_type in FORBIDDEN_FOR_TENSORRT:
            problems.append(f'{node.op_type} ({node.name}) is not allowed: TensorRT needs Q/DQ, not integer ops')
        if node.op_type in ('QuantizeLinear', 'DequantizeLinear'):
            zero = constants.get(node.input[2]) if len(node.input) > 2 else None
            if zero is None or zero.dtype != np.int8 or np.any(zero != 0):
                problems.append(f'{node.op_type} ({node.name}) must have an int8 zero point of 0')
        if node.op_type in ('Conv', 'ConvTranspose'):
            axis_wanted = 0 if node.op_type == 'Conv' else 1
            if from_dq(node.input[0]) is None:
                problems.append(f'{node.op_type} ({node.name}) input is not dequantized (no Q/DQ before it)')
            weight_dq = from_dq(node.input[1])
            if weight_dq is None:
                problems.append(f'{node.op_type} ({node.name}) weight is not an int8 DequantizeLinear')
                continue
            weight = constants.get(weight_dq.input[0])
            scale = constants.get(weight_dq.input[1])
            axis = next((a.i for a in weight_dq.attribute if a.name == 'axis'), 1)
            if weight is None or weight.dtype != np.int8:
                problems.append(f'{node.op_type} ({node.name}) weight is not a stored int8 tensor')
            elif scale is None or scale.size != weight.shape[axis_wanted] or axis != axis_wanted:
                problems.append(f'{node.op_type} ({node.name}) weight scales must be per channel on axis {axis_wanted}')
        if node.op_type in ('Add', 'Sub') and _requantized(node, consumers):
            dynamic = [name for name in node.input if name not in constants]
            if len(dynamic) == 2 and not all(from_dq(name) for name in dynamic):
                problems.append(f'{node.op_type} ({node.name}) of two tensors needs Q/DQ on both inputs (residual)')
        if node.op_type in UP_SAMPLING and from_dq(node.input[0]) is not None:
            problems.append(f'{node.op_type} ({node.name}) runs on a dequantized INT8 tensor: keep it outside INT8')


def check_onnx(path: str | Path, target: str | None = None) -> CheckReport:
    """Check ``path``: ``onnx.checker``, the I/O contract (one float32 N x C x H x W ``input`` and ``output`` with
    dynamic N, H, W), and TensorRT's explicit-quantization rules if ``target == 'tensorrt'``."""
    model = onnx.load(str(path))
    problems: list[str] = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        problems.append(f'onnx.checker: {str(error).splitlines()[0]}')
    _check_io(model, problems)
    if target == 'tensorrt':
        _check_tensorrt(model.graph, problems)
    counts = Counter(node.op_type for node in model.graph.node if node.op_type != 'Constant')
    return CheckReport(str(path), target, counts, problems)


def onnxruntime_kernel_counts(path: str | Path) -> Counter:
    """Operator counts of the graph ONNX Runtime actually runs (all CPU optimizations applied): integer kernels
    show up as ``QLinearConv`` / ``QLinearAdd`` / ..., convolutions left in float as ``Conv`` / ``FusedConv``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / 'optimized.onnx')
        ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        optimized = onnx.load(options.optimized_model_filepath)
    return Counter(node.op_type for node in optimized.graph.node)
