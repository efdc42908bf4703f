"""Rewrites of an exported ONNX graph (pure ``onnx`` / ``numpy``), and the graph walking they share.

Each rewrite changes the model in place and returns how many places it changed (0: the model is untouched):

- :func:`zero_point_of_relu_fed_quantizers`: a uint8 QuantizeLinear fed only by a Relu gets zero point 0, so ONNX
  Runtime folds the Relu into it (QDR export, ``onnxruntime`` target).
- :func:`widen_narrow_convolutions`: zero filters for an integer convolution with too few output channels for ONNX
  Runtime's fast kernel (QDR export and PTQ baseline, ``onnxruntime`` target).
- :func:`float_upsampling_inputs`: an up-sampling op reads the float tensor instead of its Q/DQ round trip (PTQ
  baseline, ``tensorrt`` target).
- :func:`fold_scalar_multiplications`: a dequantized tensor times a positive scalar becomes one DequantizeLinear
  (QDR export, both targets).
- :func:`upsampling_on_quantized`: a pixel shuffle or nearest Resize of a dequantized tensor runs on the integers
  (QDR export, ``onnxruntime`` target) or on the float tensor with its Q/DQ after it (``tensorrt`` target).
- :func:`remove_requantization`: a QuantizeLinear of a DequantizeLinear with the same parameters is bypassed (QDR
  export, both targets).

:func:`remove_dead_nodes` drops what a rewrite left without readers.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import helper, numpy_helper

UP_SAMPLING = ('DepthToSpace', 'Resize', 'Upsample')
ORT_FAST_CONV_MIN_OUTPUT = 16  # MlasConvSym's output-channel pack (FilterOutputChannelPackCount) on x86
ORT_FAST_CONV_ALIGN = 4  # its input- and output-channel alignment


def graph_links(graph: onnx.GraphProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    """``(producers, consumers)``: the node writing each tensor name, and the nodes reading it."""
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producers, consumers


def _array(tensor: onnx.TensorProto) -> np.ndarray:
    """A tensor's values; 4-bit integers (INT4 / UINT4 weights) as int8 / uint8."""
    values = numpy_helper.to_array(tensor)
    if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return values.astype(np.int8 if tensor.data_type == onnx.TensorProto.INT4 else np.uint8)
    return values


def constant_values(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Values of the graph's initializers and Constant nodes, by output name."""
    values = {init.name: _array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == 'Constant':
            for attr in node.attribute:
                if attr.name == 'value':
                    values[node.output[0]] = _array(attr.t)
    return values


def remove_dead_nodes(graph: onnx.GraphProto, op_types: Collection[str]) -> int:
    """Remove the nodes of ``op_types`` whose outputs neither a node nor the graph's outputs read -- repeatedly, as
    removing a node can leave its producers unread -- then the initializers nothing reads any more. Returns how many
    nodes and initializers were removed."""
    removed = 0
    while True:
        read = _read_names(graph)
        dead = [node for node in graph.node if node.op_type in op_types and not any(o in read for o in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
        removed += len(dead)
    read = _read_names(graph)
    unread = [init for init in graph.initializer if init.name not in read]
    for init in unread:
        graph.initializer.remove(init)
    return removed + len(unread)


def _read_names(graph: onnx.GraphProto) -> set[str]:
    """The tensor names some node or the graph's outputs read."""
    return {name for node in graph.node for name in node.input} | {out.name for out in graph.output}


def zero_point_of_relu_fed_quantizers(model: onnx.ModelProto) -> int:
    """Give every QuantizeLinear whose input a Relu writes and only it reads the uint8 zero point 0, and the same
    zero point to the DequantizeLinear nodes reading it (a new initializer; the scale stays). Returns how many
    quantizers were changed. Meant for uint8 activations: the export runs it for the ``onnxruntime`` target.

    ONNX Runtime's Relu / QuantizeLinear fusion removes a Relu in front of a QuantizeLinear only when the
    quantizer's zero point is an initializer holding the least value of its type (0 for uint8): clamping at that
    zero point is the Relu. Then ``DequantizeLinear -> Conv -> Relu -> QuantizeLinear`` becomes one QLinearConv.
    The grid goes from ``s * [-128, 127]`` (zero point 128) to ``s * [0, 255]``: values in ``[0, 127 s]`` quantize
    as before, larger ones are kept instead of clipped (exactly the trained grid for ``quant.unsigned_relu: true``).
    """
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


def widen_narrow_convolutions(model: onnx.ModelProto) -> int:
    """Give an integer convolution with too few output channels for ONNX Runtime's fast kernel zero filters up to
    the count it takes (:func:`fast_kernel_output_channels`), and slice the extra channels off its uint8 output
    (a Slice after its QuantizeLinear) -- exact, since a zero filter only adds channels nobody reads. Returns how
    many convolutions were widened.

    ONNX Runtime's x86 QLinearConv runs the indirect symmetric kernel (MLAS ``MlasConvSym``) only when the input
    channels are a multiple of :data:`ORT_FAST_CONV_ALIGN` (4) and the output channels a multiple of 4 and at least
    :data:`ORT_FAST_CONV_MIN_OUTPUT` (16); otherwise it falls back to a generic path that costs about as much for 1
    output channel as for 64 (measured on AVX512-VNNI at 256x256: 64 -> 1 takes 14 ms where 64 -> 16 takes
    3.4 ms). The last layer of a restoration network (1 or 3 channels, or 4 / 12 before a pixel shuffle) is such a
    convolution. Only group-1 convolutions with a dequantized input, a constant int8 weight with zero points 0 and a
    per-tensor QuantizeLinear on the output (directly or after a Relu), none of whose tensors is a graph output, are
    widened: the others are not integer kernels anyway. The QDR export and the PTQ baseline run it for the
    ``onnxruntime`` target, so both files run the same kernels. The weights, scales and Slice bounds it replaces or
    adds are initializers; the constants left unread are removed (:func:`remove_dead_nodes`).
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
        wide = fast_kernel_output_channels(out_channels)
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
        remove_dead_nodes(graph, ('Constant',))
    return widened


def fast_kernel_output_channels(out_channels: int) -> int:
    """The least channel count ``>= out_channels`` that ONNX Runtime's fast integer convolution takes:
    ``max(ORT_FAST_CONV_MIN_OUTPUT, ORT_FAST_CONV_ALIGN * ceil(out_channels / ORT_FAST_CONV_ALIGN))``."""
    aligned = -(-out_channels // ORT_FAST_CONV_ALIGN) * ORT_FAST_CONV_ALIGN
    return max(ORT_FAST_CONV_MIN_OUTPUT, aligned)


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
    """Append ``array`` as the initializer ``name``; returns the name."""
    graph.initializer.append(numpy_helper.from_array(array, name))
    return name


def _output_quantizer(conv: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]]) -> onnx.NodeProto | None:
    """The QuantizeLinear that alone reads ``conv``'s output, directly or through a Relu that alone reads it."""
    users = consumers.get(conv.output[0], [])
    if len(users) == 1 and users[0].op_type == 'Relu':
        users = consumers.get(users[0].output[0], [])
    return users[0] if len(users) == 1 and users[0].op_type == 'QuantizeLinear' else None


def float_upsampling_inputs(model: onnx.ModelProto) -> int:
    """Feed every up-sampling op (:data:`UP_SAMPLING`: DepthToSpace / Resize / Upsample) that reads
    ``DequantizeLinear(QuantizeLinear(t))`` the float ``t`` instead, and remove the Q/DQ nodes and initializers left
    unread (:func:`remove_dead_nodes`). Returns how many inputs were changed.

    TensorRT's explicit quantization keeps depth-to-space and resizing outside INT8 (``check_onnx(path,
    'tensorrt')`` rejects an up-sampling op on a dequantized tensor), but ONNX Runtime's ``quantize_static``
    quantizes the output of the op feeding one (e.g. the global residual Add before the final pixel shuffle) and has
    no per-tensor switch to leave it float: the PTQ baseline runs this for the ``tensorrt`` target.
    """
    graph = model.graph
    producers, _ = graph_links(graph)
    changed = 0
    for node in graph.node:
        if node.op_type not in UP_SAMPLING:
            continue
        dq = producers.get(node.input[0])
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == 'DequantizeLinear' else None
        if q is not None and q.op_type == 'QuantizeLinear':
            node.input[0] = q.input[0]
            changed += 1
    remove_dead_nodes(graph, ('QuantizeLinear', 'DequantizeLinear'))
    return changed


def _per_tensor_dequantize(node: onnx.NodeProto | None, values: dict[str, np.ndarray]) -> bool:
    """Whether ``node`` is a DequantizeLinear with a constant per-tensor scale and zero point."""
    if node is None or node.op_type != 'DequantizeLinear' or len(node.input) < 3:
        return False
    scale, zero = values.get(node.input[1]), values.get(node.input[2])
    return scale is not None and zero is not None and scale.size == 1 and zero.size == 1


def fold_scalar_multiplications(model: onnx.ModelProto) -> int:
    """Fold a multiplication of a dequantized tensor by a positive scalar constant into the dequantization:
    ``DequantizeLinear(q, s, z) * c = DequantizeLinear(q, s c, z)`` (a residual branch's ``* res_scale``, RRDB's
    ``* 0.2``). The Mul is replaced by a new DequantizeLinear with the scale ``s c``; the old one stays for its
    other readers. Returns how many Mul nodes were folded.

    The result is then a dequantized tensor: a residual Add reading it has Q/DQ on both inputs (TensorRT's rule)
    and ONNX Runtime fuses it into ``QLinearAdd``. The numbers are the same up to the float rounding of ``s c``.
    """
    graph = model.graph
    values = constant_values(graph)
    producers, _ = graph_links(graph)
    folded = 0
    for node in list(graph.node):
        if node.op_type != 'Mul' or len(node.input) != 2:
            continue
        for side in (0, 1):
            dq, constant = producers.get(node.input[side]), values.get(node.input[1 - side])
            if (_per_tensor_dequantize(dq, values) and constant is not None and constant.size == 1
                    and float(constant.reshape(())) > 0):
                scale = (values[dq.input[1]].astype(np.float64) * float(constant.reshape(()))).astype(np.float32)
                scale_name = _add_constant(graph, f'{node.output[0]}_folded_scale', scale.reshape(()))
                folded_dq = helper.make_node('DequantizeLinear', [dq.input[0], scale_name, dq.input[2]],
                                             [node.output[0]], name=f'{node.name}_folded')
                graph.node.insert(list(graph.node).index(node), folded_dq)
                graph.node.remove(node)
                folded += 1
                break
    if folded:
        remove_dead_nodes(graph, ('DequantizeLinear', 'Constant'))
    return folded


def _same_quantization(a: onnx.NodeProto, b: onnx.NodeProto, values: dict[str, np.ndarray]) -> bool:
    """Whether two per-tensor Q / DQ nodes have equal constant scales and zero points of one type."""
    za, zb = values.get(a.input[2]), values.get(b.input[2])
    return (za is not None and zb is not None and za.dtype == zb.dtype and np.array_equal(za, zb)
            and np.array_equal(values.get(a.input[1]), values.get(b.input[1])))


def _copies_values(node: onnx.NodeProto) -> bool:
    """Whether ``node`` only moves or copies values: a DepthToSpace, or a nearest-neighbour Resize."""
    if node.op_type == 'Resize':
        mode = next((a.s for a in node.attribute if a.name == 'mode'), b'nearest')
        return mode == b'nearest'
    return node.op_type == 'DepthToSpace'


def upsampling_on_quantized(model: onnx.ModelProto, integer: bool) -> int:
    """Move the quantization around every pixel shuffle (DepthToSpace) and nearest Resize that reads a per-tensor
    ``DequantizeLinear`` so the up-sampling stays exact and each runtime gets its pattern; returns how many nodes
    were changed. Both only move or copy values, so quantizing before or after them gives the same numbers.

    ``integer`` (``onnxruntime`` target): the up-sampling runs on the integers and a new DequantizeLinear (same
    scale and zero point) follows it. ONNX Runtime runs DepthToSpace and Resize on uint8 tensors but has no QDQ
    fusion for DepthToSpace: left dequantized, the up-sampling would run in float and the op before it would end in
    a dequantized tensor. Otherwise (``tensorrt``, whose rules keep up-sampling on float tensors): when the
    DequantizeLinear reads a QuantizeLinear, the up-sampling reads that quantizer's float input, and a copy of the
    QuantizeLinear / DequantizeLinear pair follows it. A pair with equal parameters right after either form is
    removed by :func:`remove_requantization`.
    """
    graph = model.graph
    values = constant_values(graph)
    producers, _ = graph_links(graph)
    moved = 0
    for node in list(graph.node):
        dq = producers.get(node.input[0]) if _copies_values(node) else None
        if not _per_tensor_dequantize(dq, values):
            continue
        q = producers.get(dq.input[0])
        if not integer and (q is None or q.op_type != 'QuantizeLinear'):
            continue
        shuffled = f'{node.output[0]}_shuffled'
        after = [helper.make_node('DequantizeLinear', [f'{shuffled}_q' if not integer else shuffled, *dq.input[1:]],
                                  [node.output[0]], name=f'{node.name}_dequantize')]
        if not integer:
            after.insert(0, helper.make_node('QuantizeLinear', [shuffled, *q.input[1:]], [f'{shuffled}_q'],
                                             name=f'{node.name}_quantize'))
        node.input[0] = dq.input[0] if integer else q.input[0]
        node.output[0] = shuffled
        position = list(graph.node).index(node) + 1
        for offset, new in enumerate(after):
            graph.node.insert(position + offset, new)
        for info in [v for v in graph.value_info if v.name == after[-1].output[0]]:
            graph.value_info.remove(info)
        moved += 1
    if moved:
        remove_dead_nodes(graph, ('QuantizeLinear', 'DequantizeLinear'))
    return moved


def remove_requantization(model: onnx.ModelProto) -> int:
    """Let the readers of ``QuantizeLinear(DequantizeLinear(q, s, z), s, z)`` read ``q``: quantizing a dequantized
    tensor again with the same scale and zero point gives ``q`` back. Returns how many QuantizeLinear nodes were
    bypassed (and removed with what only they read)."""
    graph = model.graph
    values = constant_values(graph)
    producers, consumers = graph_links(graph)
    graph_outputs = {out.name for out in graph.output}
    bypassed = 0
    for q in list(graph.node):
        dq = producers.get(q.input[0]) if q.op_type == 'QuantizeLinear' else None
        if not _per_tensor_dequantize(dq, values) or len(q.input) < 3 or q.output[0] in graph_outputs:
            continue
        if not _same_quantization(q, dq, values):
            continue
        for reader in consumers.get(q.output[0], []):
            for i, name in enumerate(reader.input):
                if name == q.output[0]:
                    reader.input[i] = dq.input[0]
        bypassed += 1
    if bypassed:
        remove_dead_nodes(graph, ('QuantizeLinear', 'DequantizeLinear'))
    return bypassed
