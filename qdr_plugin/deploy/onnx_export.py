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
    above ``127.5 s`` are clipped in training, kept here).
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


def _deconvolutions_as_conv_and_depth_to_space(model: onnx.ModelProto) -> int:
    """onnxruntime target: ONNX Runtime has no integer ConvTranspose on CPU, so a quantized 2x2 / stride-2
    ConvTranspose (no padding, one group) whose output feeds one QuantizeLinear becomes the same arithmetic in a
    form it runs in INT8: a 1x1 Conv to ``4 C_out`` channels (``W'[4c + 2i + j, k] = W[k, c, i, j]``, per-channel
    scales and bias repeated), the QuantizeLinear, then DepthToSpace (CRD) on the uint8 tensor -- exact, since
    depth-to-space only moves values."""
    graph = model.graph
    values = constant_values(graph)
    producers, consumers = graph_links(graph)
    rewritten = 0
    for node in list(graph.node):
        if node.op_type != 'ConvTranspose':
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (list(attrs.get('kernel_shape', [])) != [2, 2] or list(attrs.get('strides', [])) != [2, 2]
                or any(attrs.get('pads', [0])) or attrs.get('group', 1) != 1 or any(attrs.get('output_padding', [0]))
                or any(d != 1 for d in attrs.get('dilations', [1]))):
            continue
        weight_dq = producers.get(node.input[1])
        users = consumers.get(node.output[0], [])
        if weight_dq is None or weight_dq.op_type != 'DequantizeLinear' or len(users) != 1:
            continue
        quantize = users[0]
        weight, scale = values.get(weight_dq.input[0]), values.get(weight_dq.input[1])
        if quantize.op_type != 'QuantizeLinear' or weight is None or scale is None or weight.ndim != 4:
            continue
        c_in, c_out = weight.shape[:2]
        prefix = node.output[0]
        tensors = {
            f'{prefix}_w': weight.transpose(1, 2, 3, 0).reshape(4 * c_out, c_in, 1, 1),
            f'{prefix}_scale': np.repeat(np.broadcast_to(scale, (c_out,)), 4).astype(np.float32),
            f'{prefix}_zero': np.zeros(4 * c_out, dtype=np.int8),
        }
        conv_inputs = [node.input[0], f'{prefix}_wdq']
        if len(node.input) > 2 and node.input[2]:
            tensors[f'{prefix}_bias'] = np.repeat(values[node.input[2]], 4).astype(np.float32)
            conv_inputs.append(f'{prefix}_bias')
        graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in tensors.items())
        quantized_name = quantize.output[0]
        new_nodes = [
            helper.make_node('DequantizeLinear', [f'{prefix}_w', f'{prefix}_scale', f'{prefix}_zero'],
                             [f'{prefix}_wdq'], name=f'{node.name}_weight_dq', axis=0),
            helper.make_node('Conv', conv_inputs, [f'{prefix}_conv'], name=f'{node.name}_as_conv1x1',
                             kernel_shape=[1, 1]),
            helper.make_node('DepthToSpace', [f'{prefix}_quantized'], [quantized_name],
                             name=f'{node.name}_depth_to_space', blocksize=2, mode='CRD'),
        ]
        quantize.input[0] = f'{prefix}_conv'
        quantize.output[0] = f'{prefix}_quantized'
        index = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(new_nodes[:2]):
            graph.node.insert(index + offset, new)
        graph.node.insert(list(graph.node).index(quantize) + 1, new_nodes[2])
        rewritten += 1
    if rewritten:
        _remove_unused_constants(graph)
    return rewritten


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
        if _zero_point_of_relu_fed_quantizers(model) + _deconvolutions_as_conv_and_depth_to_space(model):
            onnx.save(model, str(path))
    return path
