"""Export a (fake-)quantized network to an INT8 ONNX model with QuantizeLinear / DequantizeLinear nodes.

The exported file follows DESIGN.md section 7: one float32 input ``input`` (N x C x H x W, values in [0, 1], dynamic
N, H, W) and one output ``output`` of the same layout. The learned step sizes are written as they are (no
re-calibration). Two targets:

``tensorrt``
    Explicit quantization as TensorRT wants it: int8 activations with zero point 0, int8 weights with per-channel
    scales on the output-channel axis (0 for Conv, 1 for ConvTranspose), Q/DQ at every convolution input and on both
    inputs of the residual additions, depth-to-space (pixel-shuffle) on dequantized float tensors.
``onnxruntime``
    The same numbers in the form ONNX Runtime's CPU provider runs as integer kernels: activations as uint8 (a
    symmetric int8 grid with zero point 0 is uint8 with zero point 128), and a QuantizeLinear fed only by a Relu gets
    zero point 0, so ONNX Runtime folds the Relu into it and ``DequantizeLinear -> Conv -> QuantizeLinear`` becomes
    one QLinearConv. For a network trained with ``quant.unsigned_relu: true`` those quantizers already are
    ``[0, 255]`` with zero point 0 and the file computes exactly the trained numbers. Otherwise there is one
    numerical difference: after a Relu the trained int8 grid stops at ``127 s``, the uint8 one at ``255 s`` (values
    above ``127.5 s`` are clipped in training, kept here). A convolution with too few output channels for ONNX
    Runtime's fast integer kernel gets zero filters (:func:`widen_narrow_convolutions`). ONNX Runtime has no integer
    ConvTranspose: a transposed conv runs in float on its dequantized input and weight. (Rewriting a 2x2 / stride-2
    one as a 1x1 QLinearConv + uint8 DepthToSpace was measured slower on the EFM: ONNX Runtime's DepthToSpace and
    the layout transposes around it cost more than the float ConvTranspose.)
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from qdr_plugin.archs.basicsr_defaults import example_size
from qdr_plugin.quant import is_quantized, quantizers, set_quant_enabled
from qdr_plugin.quant.fake_quant import STEP_MIN
from qdr_plugin.quant.onnx_qdq import integer_weight

from .check import constant_values, graph_links

TARGETS = ('onnxruntime', 'tensorrt')
OPSET = 17
ORT_FAST_CONV_MIN_OUTPUT = 16  # MlasConvSym's output-channel pack (FilterOutputChannelPackCount) on x86
ORT_FAST_CONV_ALIGN = 4  # its input- and output-channel alignment


class ExportError(RuntimeError):
    """A network that cannot be exported; the message names the module and the operation."""


def _prepare_quantizers(net: nn.Module, target: str) -> None:
    for name, q in quantizers(net):
        if q.axis is not None:
            continue
        if target == 'tensorrt' and not q.symmetric:
            raise ExportError(
                f"quantizer '{name}' is asymmetric; TensorRT takes only zero point 0: train with "
                'quant.act_symmetric: true, or export with --target onnxruntime.'
            )
        if target == 'tensorrt' and q.qmin >= 0:
            raise ExportError(
                f"quantizer '{name}' was trained on the unsigned grid [0, {q.qmax}] (quant.unsigned_relu: true), "
                'which TensorRT\'s int8 cannot hold: export with --target onnxruntime, or train with '
                'quant.unsigned_relu: false for TensorRT.'
            )
        q.onnx_dtype = 'uint8' if target == 'onnxruntime' else 'int8'
    for name, module in net.named_modules():
        wq = getattr(module, 'weight_quant', None)
        if wq is not None and bool((wq.step <= STEP_MIN).any()):
            raise ExportError(
                f"'{name}' has {int((wq.step <= STEP_MIN).sum())} weight step sizes <= 0 (channels that quantize "
                'every weight to 0, trained before step sizes were kept positive); they have no INT8 form. '
                'Fine-tune the checkpoint a few hundred iterations with QDRModel, which keeps step sizes valid.'
            )
        if wq is not None:
            scale = wq.step.detach().clamp_min(STEP_MIN).to(torch.float32).clone()
            wq.onnx_weight = (integer_weight(module.weight, scale, wq.qmin, wq.qmax, wq.axis), scale)


def _diagnose(net: nn.Module, example: torch.Tensor, error: Exception) -> ExportError:
    """Name the module and the operation that stopped the export."""
    message = str(error)
    match = re.search(r"(aten::\w+|prim::PythonOp|[Pp]ython operator '?\w+'?)", message)
    op = match.group(1) if match else None
    probe = copy.deepcopy(net)
    set_quant_enabled(probe, False)
    culprits = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            graph = torch.jit.trace(probe, example, check_trace=False).inlined_graph
        for node in graph.nodes():
            kind = node.kind()
            if kind == 'prim::PythonOp' or (op is not None and kind == op):
                scope = node.scopeName().split('/')[-1].replace('__module.', '') or '<top level>'
                label = node.pyname() if kind == 'prim::PythonOp' else kind
                culprits.append(f"module '{scope}' uses {label}")
    except Exception as trace_error:  # the network cannot even be traced
        culprits.append(f'it cannot be traced ({type(trace_error).__name__}: {trace_error})')
    where = '; '.join(dict.fromkeys(culprits)) or (op or 'an operation')
    return ExportError(
        f'cannot export {type(net).__name__} to ONNX: {where} with no ONNX form (custom autograd functions and '
        f'unsupported aten ops cannot be exported). Replace it with standard ops, or keep the network out of the '
        f'export. Exporter said: {message.splitlines()[0] if message else type(error).__name__}'
    )


def _zero_point_of_relu_fed_quantizers(model: onnx.ModelProto) -> int:
    """onnxruntime target: a uint8 QuantizeLinear whose only producer is a Relu consumed by it alone gets zero
    point 0 (and so does its DequantizeLinear), so ONNX Runtime folds the Relu into the quantization."""
    graph = model.graph
    producers, consumers = graph_links(graph)
    changed = 0
    for node in graph.node:
        if node.op_type != 'QuantizeLinear':
            continue
        source = producers.get(node.input[0])
        if source is None or source.op_type != 'Relu' or len(consumers.get(node.input[0], [])) != 1:
            continue
        zero_name = f'{node.output[0]}_relu_zero_point'
        graph.initializer.append(numpy_helper.from_array(np.array(0, dtype=np.uint8), zero_name))
        node.input[2] = zero_name
        for dq in consumers.get(node.output[0], []):
            if dq.op_type == 'DequantizeLinear':
                dq.input[2] = zero_name
        changed += 1
    return changed


def _fast_kernel_output_channels(out_channels: int) -> int:
    """The least channel count ``>= out_channels`` that ONNX Runtime's fast integer convolution takes: at least
    :data:`ORT_FAST_CONV_MIN_OUTPUT` and a multiple of :data:`ORT_FAST_CONV_ALIGN`."""
    aligned = -(-out_channels // ORT_FAST_CONV_ALIGN) * ORT_FAST_CONV_ALIGN
    return max(ORT_FAST_CONV_MIN_OUTPUT, aligned)


def widen_narrow_convolutions(model: onnx.ModelProto) -> int:
    """onnxruntime target: give an integer convolution with too few output channels for ONNX Runtime's fast kernel
    zero filters up to the count it takes (:func:`_fast_kernel_output_channels`), and slice the extra channels off
    its uint8 output -- exact, since a zero filter only adds channels nobody reads. Returns how many were widened.

    ONNX Runtime's x86 QLinearConv runs the indirect symmetric kernel (MlasConvSym) only when the input channels are
    a multiple of 4 and the output channels a multiple of 4 and at least 16; otherwise it falls back to a generic
    path that costs about as much for 1 output channel as for 64 (measured on AVX512-VNNI at 256x256: 64 -> 1 takes
    14 ms where 64 -> 16 takes 3.4 ms). The last layer of a restoration network (1 or 3 channels, or 4 / 12 before a
    pixel shuffle) is such a convolution. Only group-1 convolutions with a dequantized input, a constant int8 weight
    with zero points 0 and a per-tensor QuantizeLinear on the output (directly or after a Relu) are widened: the
    others are not integer kernels anyway. Used by the QDR export and by the PTQ baseline alike.
    """
    graph = model.graph
    values = constant_values(graph)
    producers, consumers = graph_links(graph)
    graph_outputs = {out.name for out in graph.output}
    widened = 0
    for node in list(graph.node):
        if node.op_type != 'Conv' or len(node.input) < 2:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        act_dq, weight_dq = producers.get(node.input[0]), producers.get(node.input[1])
        if attrs.get('group', 1) != 1 or act_dq is None or act_dq.op_type != 'DequantizeLinear':
            continue
        if not _constant_dequantize(weight_dq, values, consumers, np.int8):
            continue
        out_channels, in_channels = values[weight_dq.input[0]].shape[:2]
        wide = _fast_kernel_output_channels(out_channels)
        if wide == out_channels or in_channels % ORT_FAST_CONV_ALIGN:
            continue
        quantize = _output_quantizer(node, consumers)
        per_tensor = quantize is not None and values.get(quantize.input[1], np.zeros(2)).size == 1
        if not per_tensor or graph_outputs & {node.output[0], quantize.input[0], quantize.output[0]}:
            continue
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        bias_dq = producers.get(bias) if bias is not None else None
        if bias is not None and bias not in values and not _constant_dequantize(bias_dq, values, consumers, np.int32):
            continue
        prefix = node.output[0]
        extra = wide - out_channels
        _pad_dequantized_constant(graph, weight_dq, values, extra, f'{prefix}_wide_weight')
        if bias_dq is not None:
            _pad_dequantized_constant(graph, bias_dq, values, extra, f'{prefix}_wide_bias')
        elif bias is not None:
            node.input[2] = _add_constant(graph, f'{prefix}_wide_bias', np.pad(values[bias], (0, extra)))
        wide_tensors = {node.output[0], quantize.input[0]}  # the conv's output and the Relu's, if any
        for info in [v for v in graph.value_info if v.name in wide_tensors]:
            graph.value_info.remove(info)  # their recorded shapes have the old channel count
        narrow = quantize.output[0]
        quantize.output[0] = f'{narrow}_wide'
        bounds = [_add_constant(graph, f'{prefix}_narrow_{key}', np.array([v], dtype=np.int64))
                  for key, v in (('starts', 0), ('ends', out_channels), ('axes', 1))]
        slice_node = helper.make_node('Slice', [quantize.output[0], *bounds], [narrow], name=f'{node.name}_narrow')
        graph.node.insert(list(graph.node).index(quantize) + 1, slice_node)
        widened += 1
    if widened:
        _remove_unused_constants(graph)
    return widened


def _constant_dequantize(
    node: onnx.NodeProto | None, values: dict[str, np.ndarray], consumers: dict[str, list[onnx.NodeProto]],
    dtype: type,
) -> bool:
    """Whether ``node`` is a DequantizeLinear of a constant ``dtype`` tensor along axis 0, with constant scales,
    zero points 0 and one consumer."""
    if node is None or node.op_type != 'DequantizeLinear' or len(consumers.get(node.output[0], [])) != 1:
        return False
    value = values.get(node.input[0])
    zero = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == 'axis'), 1)
    scale = values.get(node.input[1])
    return (value is not None and value.dtype == dtype and scale is not None and (zero is None or not np.any(zero))
            and (scale.size == 1 or axis == 0))


def _pad_dequantized_constant(
    graph: onnx.GraphProto, dq: onnx.NodeProto, values: dict[str, np.ndarray], extra: int, prefix: str
) -> None:
    """Append ``extra`` zero slices along axis 0 to the constant ``dq`` dequantizes (scales repeat the last one)."""
    value = values[dq.input[0]]
    dq.input[0] = _add_constant(graph, f'{prefix}_q', np.pad(value, [(0, extra)] + [(0, 0)] * (value.ndim - 1)))
    scale = values[dq.input[1]]
    if scale.size > 1:
        dq.input[1] = _add_constant(graph, f'{prefix}_scale', np.pad(scale, (0, extra), mode='edge'))
    if len(dq.input) > 2 and dq.input[2] and values[dq.input[2]].size > 1:
        dq.input[2] = _add_constant(graph, f'{prefix}_zero', np.pad(values[dq.input[2]], (0, extra)))


def _add_constant(graph: onnx.GraphProto, name: str, array: np.ndarray) -> str:
    graph.initializer.append(numpy_helper.from_array(array, name))
    return name


def _output_quantizer(conv: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]]) -> onnx.NodeProto | None:
    """The QuantizeLinear that alone reads ``conv``'s output, directly or through a Relu that alone reads it."""
    users = consumers.get(conv.output[0], [])
    if len(users) == 1 and users[0].op_type == 'Relu':
        users = consumers.get(users[0].output[0], [])
    return users[0] if len(users) == 1 and users[0].op_type == 'QuantizeLinear' else None


def _remove_unused_constants(graph: onnx.GraphProto) -> None:
    """Drop initializers and Constant nodes that no node reads any more (after a rewrite)."""
    used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    for node in [n for n in graph.node if n.op_type == 'Constant' and n.output[0] not in used]:
        graph.node.remove(node)


def export_onnx(
    net: nn.Module,
    path: str | Path,
    in_channels: int,
    target: str = 'onnxruntime',
    fp32: bool = False,
    opset: int = OPSET,
) -> Path:
    """Write ``net`` as ONNX to ``path`` (INT8 Q/DQ for a quantized network, or FP32 with ``fp32=True``).

    The network is deep-copied: ``net`` itself is not touched. Raises :class:`ExportError` when an operation of
    the network has no ONNX form, naming the module.
    """
    if target not in TARGETS:
        raise ValueError(f'target must be one of {TARGETS}, got {target!r}.')
    if opset < 13:
        raise ValueError(f'opset must be >= 13 (per-channel DequantizeLinear), got {opset}.')
    net = copy.deepcopy(net).eval()
    if fp32:
        set_quant_enabled(net, False)
    elif not is_quantized(net):
        raise ExportError('the network has no fake quantizers: export a QDR (quantized) checkpoint, or pass fp32.')
    else:
        _prepare_quantizers(net, target)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = example_size(net)  # 64, or a multiple of the window size of a windowed transformer (SwinIR)
    example = torch.rand(1, in_channels, size, size)
    dynamic = {0: 'N', 2: 'H', 3: 'W'}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(
                net, (example,), str(path), dynamo=False, opset_version=opset, input_names=['input'],
                output_names=['output'], dynamic_axes={'input': dynamic, 'output': dynamic},
            )
    except Exception as error:  # noqa: BLE001  (any exporter failure becomes one message naming the module)
        raise _diagnose(net, example, error) from error
    if not fp32 and target == 'onnxruntime':
        model = onnx.load(str(path))
        if _zero_point_of_relu_fed_quantizers(model) + widen_narrow_convolutions(model):
            onnx.save(model, str(path))
    return path
