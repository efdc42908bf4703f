"""Which operators of an ONNX file ONNX Runtime runs as integer kernels, read from its optimized graph.

A convolution runs as an integer kernel (``QLinearConv``) only when ONNX Runtime's QDQ transformer fuses
``DequantizeLinear -> Conv -> QuantizeLinear``; any other convolution stays float (``Conv`` / ``FusedConv`` /
``ConvTranspose``) on dequantized inputs. Element-wise work runs as an integer op (``QLinearAdd``,
``QLinearMul``, ``QLinearSigmoid``, ``QLinearLeakyRelu``, ...) under the same condition, or in float between a
DequantizeLinear and a QuantizeLinear. :func:`kernel_report` reads the graph ONNX Runtime really runs and sorts its
operators into those groups, so a user sees at once why an INT8 file is slow.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx

from qdr_plugin.errors import UserError

FLOAT_CONVS = ('Conv', 'FusedConv', 'ConvTranspose')
"""Operator types of convolutions ONNX Runtime runs in float."""
QDQ_OPS = ('QuantizeLinear', 'DequantizeLinear')
DATA_MOVEMENT = ('DepthToSpace', 'SpaceToDepth', 'Transpose', 'Reshape', 'Slice', 'Pad', 'Concat', 'Identity',
                 'Shape', 'Gather', 'Unsqueeze', 'Squeeze', 'Cast', 'Constant', 'Flatten', 'Expand')
"""Operators that move values without arithmetic: on an integer tensor they cost no float work."""
COPYING_ON_INTEGERS = ('Resize', 'MaxPool')
"""Operators that copy values when they read an integer tensor (a nearest up-sampling, a max pooling): data
movement there, float work otherwise."""


@dataclass
class KernelReport:
    """What ONNX Runtime's CPU provider runs of one file (its optimized graph, all optimizations on).

    Attributes:
        integer_convs: convolutions run as ``QLinearConv``.
        float_convs: names of the convolutions run in float, with their operator type (``'Conv'``, ...).
        integer_ops: the other integer operators (``QLinearAdd``, ...) by type.
        float_ops: element-wise float operators (``Add``, ``Mul``, ``Sigmoid``, ...) by type.
        data_ops: the operators of :data:`DATA_MOVEMENT`, those of :data:`COPYING_ON_INTEGERS` that read an integer
            tensor, and those computing on tensor shapes (``'Sub (shape)'``), by type.
        qdq: QuantizeLinear / DequantizeLinear left between float and integer parts, by type.
    """

    integer_convs: int
    float_convs: list[tuple[str, str]]
    integer_ops: Counter
    float_ops: Counter
    data_ops: Counter
    qdq: Counter

    @property
    def convs(self) -> int:
        """All convolutions, integer and float."""
        return self.integer_convs + len(self.float_convs)

    def as_dict(self) -> dict:
        """The report as plain JSON values."""
        return {
            'convs': self.convs, 'integer_convs': self.integer_convs, 'float_convs': len(self.float_convs),
            'float_conv_nodes': [f'{name} ({op})' for name, op in self.float_convs],
            'integer_ops': dict(self.integer_ops), 'float_ops': dict(self.float_ops),
            'data_ops': dict(self.data_ops), 'qdq': dict(self.qdq),
        }

    def lines(self, op_times: Mapping[str, float] | None = None, top: int = 5) -> list[str]:
        """The report as text lines; with ``op_times`` (ms per run by op type, from ONNX Runtime's profiler,
        e.g. :func:`qdr_plugin.bench.timing.ort_op_times`) also the ``top`` float op types by time."""
        lines = [f'ONNX Runtime runs {self.integer_convs} of {self.convs} convolutions as integer kernels '
                 f'(QLinearConv), {len(self.float_convs)} in float']
        if self.float_convs:
            names = ', '.join(f'{name} ({op})' for name, op in self.float_convs[:12])
            more = f' and {len(self.float_convs) - 12} more' if len(self.float_convs) > 12 else ''
            lines.append(f'  float convolutions: {names}{more}')
        lines.append(f'  integer element-wise ops: {_counts(self.integer_ops)}')
        lines.append(f'  float element-wise ops: {_counts(self.float_ops)}')
        lines.append(f'  quantize / dequantize left: {_counts(self.qdq)}; data movement: {_counts(self.data_ops)}')
        if op_times:
            floating = [(op, ms) for op, ms in op_times.items() if not op.startswith('QLinear')
                        and op not in ('MatMulInteger', 'ConvInteger')]
            total = sum(op_times.values()) or 1.0
            top_ops = ', '.join(f'{op} {100 * ms / total:.0f} %' for op, ms in
                                sorted(floating, key=lambda item: -item[1])[:top])
            lines.append(f'  top float op types by share of kernel time: {top_ops}')
        return lines


def _counts(counter: Counter) -> str:
    return ', '.join(f'{op} {n}' for op, n in sorted(counter.items())) or 'none'


def _shape_nodes(graph: onnx.GraphProto) -> set[str]:
    """Output names of the nodes that compute on tensor shapes only (``Shape`` and what reads nothing but shapes and
    constants: the padding arithmetic of a dynamic-size input), not on images."""
    constants = {init.name for init in graph.initializer}
    derived: set[str] = set()
    for node in graph.node:  # topological order
        inputs = [name for name in node.input if name and name not in constants]
        if node.op_type == 'Shape' or (inputs and all(name in derived for name in inputs)):
            derived.update(node.output)
    return derived


def classify(graph: onnx.GraphProto) -> KernelReport:
    """Sort the nodes of an (ONNX Runtime optimized) graph into a :class:`KernelReport`; shape arithmetic counts
    as data movement."""
    integer_convs, float_convs = 0, []
    integer_ops, float_ops, data_ops, qdq = Counter(), Counter(), Counter(), Counter()
    shapes = _shape_nodes(graph)
    integer_tensors: set[str] = set()  # outputs of QuantizeLinear and integer ops, and data movement of them
    for node in graph.node:  # topological order
        op = node.op_type
        if (op == 'QuantizeLinear' or op.startswith('QLinear')
                or (op in (*DATA_MOVEMENT, *COPYING_ON_INTEGERS) and node.input and node.input[0] in integer_tensors)):
            integer_tensors.update(node.output)
        if node.output and node.output[0] in shapes:
            data_ops[f'{op} (shape)'] += 1
        elif op == 'QLinearConv':
            integer_convs += 1
        elif op in FLOAT_CONVS:
            float_convs.append((node.name, op))
        elif op in QDQ_OPS:
            qdq[op] += 1
        elif op.startswith('QLinear') or op in ('ConvInteger', 'MatMulInteger'):
            integer_ops[op] += 1
        elif op in DATA_MOVEMENT or (op in COPYING_ON_INTEGERS and node.input[0] in integer_tensors):
            data_ops[op] += 1
        else:
            float_ops[op] += 1
    return KernelReport(integer_convs, float_convs, integer_ops, float_ops, data_ops, qdq)


def optimized_graph(path: str | Path) -> onnx.ModelProto:
    """The graph ONNX Runtime's CPU provider runs for ``path`` (all graph optimizations applied)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        options.optimized_model_filepath = str(Path(tmp) / 'optimized.onnx')
        try:
            ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
        except Exception as error:  # noqa: BLE001  (ONNX Runtime raises its own exception types)
            raise UserError(f'{path}: ONNX Runtime cannot load it ({str(error).splitlines()[0]}).') from error
        return onnx.load(options.optimized_model_filepath)


def kernel_report(path: str | Path) -> KernelReport:
    """:func:`classify` of the graph ONNX Runtime runs for the ONNX file ``path``."""
    return classify(optimized_graph(path).graph)
