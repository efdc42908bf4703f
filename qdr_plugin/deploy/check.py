"""Validate an exported INT8 ONNX file: ``onnx.checker``, the I/O contract, the integers of its quantization nodes
(positive finite scales; a QuantizeLinear of a constant whose integers fit their type; with the network it was
exported from, stored integer weights equal to the network's), and TensorRT's explicit-quantization rules for the
``tensorrt`` target; count the operators. Also: which convolutions ONNX Runtime really runs as integer kernels (from
its optimized graph)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from qdr_plugin.errors import UserError
from qdr_plugin.quant.fake_quant import STEP_MIN

from .graph_rewrites import UP_SAMPLING, constant_values, graph_links
from .kernel_report import optimized_graph

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
            if from_dq(node.input[0]) is None and from_dq(node.input[1]) is None:
                continue  # a layer kept in float (quant.keep_fp32): TensorRT runs it in FP32 / FP16
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


def _dtype_of_quantize(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> np.dtype:
    """The integer type a QuantizeLinear writes: its zero point's, else its ``output_dtype``, else uint8."""
    if len(node.input) > 2 and node.input[2] in constants:
        return constants[node.input[2]].dtype
    output_dtype = next((a.i for a in node.attribute if a.name == 'output_dtype'), 0)
    return onnx.helper.tensor_dtype_to_np_dtype(output_dtype) if output_dtype else np.dtype(np.uint8)


def _per_axis(values: np.ndarray, like: np.ndarray, node: onnx.NodeProto) -> np.ndarray:
    """A scale or zero point of ``node`` shaped to broadcast against ``like`` (per tensor, or along ``axis``)."""
    if values.size == 1:
        return values.reshape(())
    axis = next((a.i for a in node.attribute if a.name == 'axis'), 1)
    shape = [1] * like.ndim
    shape[axis] = -1
    return values.reshape(shape)


def _check_quantization_constants(graph: onnx.GraphProto, problems: list[str]) -> None:
    """Every Q/DQ scale a positive finite constant; a QuantizeLinear of a constant (a weight quantized in the graph)
    gives integers inside its type, else its values saturate."""
    constants = constant_values(graph)
    for node in graph.node:
        if node.op_type not in ('QuantizeLinear', 'DequantizeLinear') or len(node.input) < 2:
            continue
        scale = constants.get(node.input[1])
        if scale is None:
            continue
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            problems.append(f'{node.op_type} ({node.name}) has a scale that is not a positive finite number')
            continue
        value = constants.get(node.input[0])
        if node.op_type != 'QuantizeLinear' or value is None or not np.issubdtype(value.dtype, np.floating):
            continue
        dtype = _dtype_of_quantize(node, constants)
        zero = constants[node.input[2]] if len(node.input) > 2 and node.input[2] in constants else np.zeros(1)
        q = np.round(value / _per_axis(scale, value, node)) + _per_axis(zero.astype(np.float64), value, node)
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
        outside = int(np.count_nonzero((q < low) | (q > high)))
        if outside:
            problems.append(
                f'QuantizeLinear ({node.name}) of the constant {node.input[0]}: {outside} of {q.size} values do not '
                f'fit {dtype} [{low}, {high}] (round(x / scale) + zero point reaches {int(q.min())} .. '
                f'{int(q.max())}); they saturate: the scale is too small for the integer type'
            )


@dataclass
class _StoredWeight:
    """An integer constant a DequantizeLinear reads: its values minus its zero points (a uint8 weight with zero point
    128 holds the same numbers as the int8 one), per-channel scales and axis."""

    values: np.ndarray
    scale: np.ndarray
    axis: int


def _stored_weights(graph: onnx.GraphProto) -> list[_StoredWeight]:
    constants = constant_values(graph)
    stored = []
    for node in graph.node:
        if node.op_type != 'DequantizeLinear' or len(node.input) < 2:
            continue
        values, scale = constants.get(node.input[0]), constants.get(node.input[1])
        if values is not None and scale is not None and np.issubdtype(values.dtype, np.integer) and values.ndim > 1:
            axis = next((a.i for a in node.attribute if a.name == 'axis'), 1)
            zero = constants.get(node.input[2]) if len(node.input) > 2 else None
            integers = values.astype(np.int64)
            if zero is not None:
                integers = integers - _per_axis(zero.astype(np.int64), values, node)
            stored.append(_StoredWeight(integers, scale.astype(np.float32).ravel(), axis))
    return stored


def _network_integer_weight(module: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """``(clamp(round(W / s_c), qmin, qmax), s_c)`` of a quantized module, unbounded by any storage type: what its
    INT8 export must store."""
    wq = module.weight_quant
    step = wq.step.detach().clamp_min(STEP_MIN).to(torch.float32)
    shape = [1] * module.weight.dim()
    shape[wq.axis] = -1
    with torch.no_grad():
        integers = torch.clamp(torch.round(module.weight.detach() / step.reshape(shape)), wq.qmin, wq.qmax)
    return integers.to(torch.int64).numpy(), step.numpy()


def _matching(stored: _StoredWeight, integers: np.ndarray, step: np.ndarray, axis: int) -> np.ndarray | None:
    """``stored``'s values cut to the network weight's shape when its scales are the network's (the export may
    append zero filters along axis 0), else ``None``."""
    if stored.scale.size < step.size or not np.array_equal(stored.scale[: step.size], step):
        return None
    if step.size > 1 and stored.axis != axis:
        return None
    values = stored.values
    if values.shape[1:] != integers.shape[1:] or values.shape[0] < integers.shape[0]:
        return None
    return values[: integers.shape[0]]


def _check_weights_against(graph: onnx.GraphProto, network: nn.Module, problems: list[str]) -> None:
    """Every quantized weight of ``network`` is stored in the file with its scales and its integers."""
    stored = _stored_weights(graph)
    for name, module in network.named_modules():
        wq = getattr(module, 'weight_quant', None)
        if wq is None or not wq.enabled or getattr(module, 'weight', None) is None:
            continue
        integers, step = _network_integer_weight(module)
        candidates = [cut for w in stored if (cut := _matching(w, integers, step, wq.axis)) is not None]
        if not candidates:
            problems.append(f"weights of '{name}': no DequantizeLinear of the file holds them with their scales "
                            '(not an export of this network)')
            continue
        gaps = min((np.abs(cut - integers) for cut in candidates), key=lambda gap: int(np.count_nonzero(gap)))
        wrong = int(np.count_nonzero(gaps))
        if wrong:
            problems.append(
                f"weights of '{name}': {wrong} of {gaps.size} stored integers differ from the network's (by up to "
                f'{int(gaps.max())}; a value too wide for the stored integer type wraps around): export the checkpoint '
                'again with basicsr export (it refuses quantizers wider than 8 bits)'
            )


def _load_model(path: str | Path) -> onnx.ModelProto:
    """The ONNX model at ``path``; a one-line :class:`UserError` when it is missing or not an ONNX file."""
    if not Path(path).is_file():
        raise UserError(f'{path}: the ONNX file does not exist (or is not a file).')
    try:
        return onnx.load(str(path))
    except Exception as error:  # noqa: BLE001  (protobuf and onnx raise their own types)
        detail = ' '.join(str(error).split())[:160] or type(error).__name__
        message = f'{path}: not a readable ONNX model ({detail}); give a file written by basicsr export.'
        raise UserError(message) from error


def check_onnx(path: str | Path, target: str | None = None, network: nn.Module | None = None) -> CheckReport:
    """Check ``path``: ``onnx.checker``, the I/O contract (one float32 N x C x H x W ``input`` and ``output`` with
    dynamic N, H, W), the constants of its quantization nodes, TensorRT's explicit-quantization rules if
    ``target == 'tensorrt'``, and, given the quantized ``network`` the file was exported from, that every weight is
    stored with the network's scales and integers."""
    model = _load_model(path)
    problems: list[str] = []
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        problems.append(f'onnx.checker: {str(error).splitlines()[0]}')
    _check_io(model, problems)
    _check_quantization_constants(model.graph, problems)
    if network is not None:
        _check_weights_against(model.graph, network, problems)
    if target == 'tensorrt':
        _check_tensorrt(model.graph, problems)
    counts = Counter(node.op_type for node in model.graph.node if node.op_type != 'Constant')
    return CheckReport(str(path), target, counts, problems)


def onnxruntime_kernel_counts(path: str | Path) -> Counter:
    """Operator counts of the graph ONNX Runtime actually runs (all CPU optimizations applied): integer kernels
    show up as ``QLinearConv`` / ``QLinearAdd`` / ..., convolutions left in float as ``Conv`` / ``FusedConv``
    (:mod:`qdr_plugin.deploy.kernel_report` sorts them)."""
    return Counter(node.op_type for node in optimized_graph(path).graph.node)
