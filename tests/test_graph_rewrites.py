"""ONNX graph rewrites: small hand-built Q/DQ graphs and an exported network, run by real ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from conftest import NO_VNNI
from onnx import TensorProto, helper, numpy_helper
from test_export import _noisy_crop, _quantized, _run, _unsigned_relu_dncnn

from qdr_plugin.archs import DnCNN
from qdr_plugin.deploy import check_onnx, export_onnx, onnxruntime_kernel_counts
from qdr_plugin.deploy.graph_rewrites import (
    constant_values,
    fast_kernel_output_channels,
    float_upsampling_inputs,
    fold_scalar_multiplications,
    graph_links,
    remove_dead_nodes,
    remove_requantization,
    upsampling_on_quantized,
    widen_narrow_convolutions,
    zero_point_of_relu_fed_quantizers,
)

IN_CHANNELS = 4
INPUT_STEP, HIDDEN_STEP, OUTPUT_STEP = 1 / 127, 0.05, 0.004


class _GraphBuilder:
    """Nodes and initializers of a small graph with one float input ``input`` (N x C x H x W, dynamic N, H, W)."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, array) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def qdq(self, source: str, name: str, step: float, zero_point) -> str:
        """QuantizeLinear + DequantizeLinear of ``source``, per tensor; returns the dequantized name."""
        scale, zero = self.constant(f'{name}_scale', np.float32(step)), self.constant(f'{name}_zero', zero_point)
        self.nodes += [helper.make_node('QuantizeLinear', [source, scale, zero], [f'{name}_q'], name=f'{name}_q'),
                       helper.make_node('DequantizeLinear', [f'{name}_q', scale, zero], [f'{name}_dq'],
                                        name=f'{name}_dq')]
        return f'{name}_dq'

    def conv(self, source: str, name: str, in_channels: int, out_channels: int, weight_max: int, step: float) -> str:
        """3x3 Conv with an int8 weight behind a per-channel DequantizeLinear and a float bias."""
        weight = self.rng.integers(-weight_max, weight_max + 1, (out_channels, in_channels, 3, 3), dtype=np.int8)
        inputs = [self.constant(f'{name}_weight', weight),
                  self.constant(f'{name}_weight_scale', np.full(out_channels, step, np.float32)),
                  self.constant(f'{name}_weight_zero', np.zeros(out_channels, np.int8))]
        bias = self.constant(f'{name}_bias', self.rng.uniform(-0.1, 0.1, out_channels).astype(np.float32))
        self.nodes += [helper.make_node('DequantizeLinear', inputs, [f'{name}_wdq'], axis=0, name=f'{name}_wdq'),
                       helper.make_node('Conv', [source, f'{name}_wdq', bias], [name], pads=[1, 1, 1, 1], name=name)]
        return name

    def model(self, result: str, out_channels: int, extra_outputs: dict[str, int] | None = None) -> onnx.ModelProto:
        """The model whose ``output`` is ``result``; ``extra_outputs``: more graph outputs, name -> element type."""
        self.nodes.append(helper.make_node('Identity', [result], ['output'], name='output'))
        outputs = [helper.make_tensor_value_info(name, elem_type, ['N', None, 'H', 'W'])
                   for name, elem_type in (extra_outputs or {}).items()]
        graph = helper.make_graph(
            self.nodes, 'rewrite_test',
            [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['N', IN_CHANNELS, 'H', 'W'])],
            [helper.make_tensor_value_info('output', TensorProto.FLOAT, ['N', out_channels, 'H', 'W']), *outputs],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=8)
        onnx.checker.check_model(model, full_check=True)
        return model


def _conv_relu_conv(hidden: int, out_channels: int, extra_outputs: dict[str, int] | None = None) -> onnx.ModelProto:
    """``Q/DQ -> Conv -> Relu -> Q/DQ -> Conv -> Q/DQ``, uint8 activations with zero point 128 (as the export writes
    them before its rewrites), :data:`IN_CHANNELS` -> ``hidden`` -> ``out_channels``."""
    build = _GraphBuilder()
    x = build.qdq('input', 'x', INPUT_STEP, np.uint8(128))
    hidden_out = build.conv(x, 'conv1', IN_CHANNELS, hidden, 10, 0.01)  # |values| < 3.7 < 127 * HIDDEN_STEP
    build.nodes.append(helper.make_node('Relu', [hidden_out], ['relu'], name='relu'))
    h = build.qdq('relu', 'h', HIDDEN_STEP, np.uint8(128))
    y = build.qdq(build.conv(h, 'conv2', hidden, out_channels, 5, 0.004), 'y', OUTPUT_STEP, np.uint8(128))
    return build.model(y, out_channels, extra_outputs)


def _saved(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(None, {'input': x})[0]


def _image() -> np.ndarray:
    return np.random.default_rng(1).random((2, IN_CHANNELS, 23, 31), dtype=np.float32)


def test_graph_links_and_constant_values():
    graph = _conv_relu_conv(16, 1).graph
    graph.node.insert(0, helper.make_node('Constant', [], ['two'], value=numpy_helper.from_array(np.float32(2))))
    producers, consumers = graph_links(graph)
    assert producers['relu'].op_type == 'Relu' and 'input' not in producers
    assert [n.op_type for n in consumers['relu']] == ['QuantizeLinear']
    assert [n.name for n in consumers['x_scale']] == ['x_q', 'x_dq']
    values = constant_values(graph)
    assert values['two'] == 2 and values['conv2_weight'].shape == (1, 16, 3, 3)
    assert values['conv2_weight'].dtype == np.int8 and 'relu' not in values


def test_relu_fed_quantizer_gets_zero_point_0_so_onnxruntime_folds_the_relu(tmp_path):
    model = _conv_relu_conv(16, 16)
    before = _saved(model, tmp_path / 'before.onnx')
    assert zero_point_of_relu_fed_quantizers(model) == 1
    after = _saved(model, tmp_path / 'after.onnx')
    values = constant_values(model.graph)
    _, consumers = graph_links(model.graph)
    quantizers = [n for n in model.graph.node if n.op_type == 'QuantizeLinear']
    assert [q.name for q in quantizers] == ['x_q', 'h_q', 'y_q']
    for q in quantizers:
        zero = values[q.input[2]]
        assert zero.dtype == np.uint8 and int(zero) == (0 if q.name == 'h_q' else 128)
        assert all(dq.input[2] == q.input[2] for dq in consumers[q.output[0]])
    # zero point 128: ONNX Runtime fuses Conv + Relu in float; zero point 0: both convolutions are QLinearConv
    assert onnxruntime_kernel_counts(before)['QLinearConv'] == 1
    kernels = onnxruntime_kernel_counts(after)
    assert kernels['QLinearConv'] == 2 and kernels['Relu'] == kernels['FusedConv'] == 0
    # the Relu outputs stay below 127 steps, where both grids hold the same values
    np.testing.assert_array_equal(_outputs(after, _image()), _outputs(before, _image()))


def test_fast_kernel_output_channels():
    assert [fast_kernel_output_channels(c) for c in (1, 3, 4, 12, 16, 17, 20, 64)] == [16, 16, 16, 16, 16, 20, 20, 64]


def test_narrow_convolution_gets_zero_filters_and_computes_the_same(tmp_path):
    model = _conv_relu_conv(16, 3)
    zero_point_of_relu_fed_quantizers(model)
    narrow = _saved(model, tmp_path / 'narrow.onnx')
    assert widen_narrow_convolutions(model) == 1
    wide = _saved(model, tmp_path / 'wide.onnx')
    onnx.checker.check_model(model, full_check=True)
    values = constant_values(model.graph)
    producers, _ = graph_links(model.graph)
    convs = {n.name: n for n in model.graph.node if n.op_type == 'Conv'}
    weight_dq = {name: producers[conv.input[1]] for name, conv in convs.items()}
    assert [values[weight_dq[name].input[0]].shape[0] for name in ('conv1', 'conv2')] == [16, 16]
    weight, bias = values[weight_dq['conv2'].input[0]], values[convs['conv2'].input[2]]
    assert weight[:3].any() and not weight[3:].any() and bias.shape == (16,) and not bias[3:].any()
    assert values[weight_dq['conv2'].input[1]].shape == (16,)  # per-channel scales, the last one repeated
    assert [n.op_type for n in model.graph.node].count('Slice') == 1
    assert not {'conv2_weight', 'conv2_weight_scale', 'conv2_bias'} & set(values)  # unread: removed
    assert onnxruntime_kernel_counts(wide)['QLinearConv'] == 2
    x = _image()
    got = _outputs(wide, x)
    assert got.shape == (2, 3, 23, 31) and got.std() > 10 * OUTPUT_STEP
    np.testing.assert_array_equal(got, _outputs(narrow, x))
    assert widen_narrow_convolutions(model) == 0


def test_convolution_is_left_alone_when_one_of_its_tensors_is_a_graph_output_or_its_input_is_unaligned():
    for extra in ({'conv2': TensorProto.FLOAT}, {'y_q': TensorProto.UINT8}):
        model = _conv_relu_conv(16, 3, extra_outputs=extra)
        unchanged = model.SerializeToString()
        assert widen_narrow_convolutions(model) == 0 and model.SerializeToString() == unchanged
    model = _conv_relu_conv(6, 3)  # conv2 reads 6 channels, not a multiple of 4; conv1 (4 -> 6) is widened
    assert widen_narrow_convolutions(model) == 1
    assert constant_values(model.graph)['conv2_weight'].shape[0] == 3


def _upsampling_model() -> onnx.ModelProto:
    """``input -> Q/DQ (int8, zero point 0) -> DepthToSpace(2) -> output``, as ``quantize_static`` leaves it."""
    build = _GraphBuilder()
    x = build.qdq('input', 'x', INPUT_STEP, np.int8(0))
    build.nodes.append(helper.make_node('DepthToSpace', [x], ['up'], blocksize=2, mode='CRD', name='up'))
    return build.model('up', IN_CHANNELS // 4)


def test_upsampling_reads_the_float_tensor_and_its_qdq_is_removed(tmp_path):
    model = _upsampling_model()
    before = _saved(model, tmp_path / 'before.onnx')
    assert any('DepthToSpace' in p for p in check_onnx(before, 'tensorrt').problems)
    assert float_upsampling_inputs(model) == 1
    after = _saved(model, tmp_path / 'after.onnx')
    assert [n.op_type for n in model.graph.node] == ['DepthToSpace', 'Identity']
    assert len(model.graph.initializer) == 0
    assert check_onnx(after, 'tensorrt').problems == []
    x = _image()
    np.testing.assert_array_equal(_outputs(after, x), torch.pixel_shuffle(torch.from_numpy(x), 2).numpy())
    assert float_upsampling_inputs(model) == 0


def test_remove_dead_nodes_removes_unread_chains_of_the_given_types_and_their_initializers():
    build = _GraphBuilder()
    build.qdq('input', 'dead', INPUT_STEP, np.uint8(128))  # nothing reads dead_dq
    build.nodes.append(helper.make_node('Neg', ['input'], ['unread_neg'], name='neg'))
    build.nodes.append(helper.make_node('Constant', [], ['unread_constant'],
                                        value=numpy_helper.from_array(np.float32(1))))
    build.constant('unread', np.float32(0))
    graph = build.model('input', IN_CHANNELS, extra_outputs={'unread_neg': TensorProto.FLOAT}).graph
    assert remove_dead_nodes(graph, ('QuantizeLinear', 'DequantizeLinear')) == 2 + 3  # DQ, then Q; 3 initializers
    assert [n.op_type for n in graph.node] == ['Neg', 'Constant', 'Identity']  # a graph output, another type
    assert len(graph.initializer) == 0
    assert remove_dead_nodes(graph, ('Constant', 'Neg')) == 1  # the Neg is a graph output
    assert [n.op_type for n in graph.node] == ['Neg', 'Identity']


def _conv_output_channels(path) -> list[int]:
    """Output channels of every Conv in an exported file, read from its (dequantized) weight."""
    model = onnx.load(str(path))
    values = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    values.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == 'Constant' and n.attribute and n.attribute[0].name == 'value'})
    producers = {out: n for n in model.graph.node for out in n.output}
    channels = []
    for node in model.graph.node:
        if node.op_type == 'Conv':
            weight = producers.get(node.input[1])
            channels.append(values[weight.input[0] if weight is not None else node.input[1]].shape[0])
    return channels


def test_narrow_integer_convolution_gets_zero_filters_for_onnxruntimes_fast_kernel(tmp_path):
    """DnCNN's last conv (16 -> 1) has too few output channels for ONNX Runtime's fast integer kernel, which wants
    a multiple of 4 and at least 16: the onnxruntime export gives it 15 zero filters and slices their channels off
    the uint8 output, so every QLinearConv is one the fast kernel takes and the output is unchanged."""
    net = _unsigned_relu_dncnn()
    path = export_onnx(net, tmp_path / 'wide.onnx', 1, 'onnxruntime', no_vnni=NO_VNNI)
    assert _conv_output_channels(path) == [16] * 5  # first conv (1 -> 16), three middle ones, last (1 -> 16)
    assert check_onnx(path, 'onnxruntime').op_counts['Slice'] == 1
    assert onnxruntime_kernel_counts(path)['QLinearConv'] == 5
    x = _noisy_crop(1, 30, 40)
    with torch.no_grad():
        expected = net(x).numpy()
    got = _run(path, x)
    assert got.shape == expected.shape == (1, 1, 37, 53)
    assert np.abs(got - expected).max() <= 2 * float(net.sub.quant_b.step) + 1e-6
    # the TensorRT form keeps the layer as trained (TensorRT picks its own kernels)
    trt = _quantized(DnCNN(in_ch=1, width=16, depth=5), 1)
    assert _conv_output_channels(export_onnx(trt, tmp_path / 'trt.onnx', 1, 'tensorrt'))[-1] == 1


def _conv_scale_shuffle(step_after: float) -> onnx.ModelProto:
    """``Q/DQ -> Conv -> Q/DQ -> * 0.5 -> DepthToSpace -> Q/DQ (step_after)``: a convolution with an output
    quantizer, a residual scale and a pixel shuffle, uint8 activations."""
    build = _GraphBuilder(3)
    x = build.qdq('input', 'x', INPUT_STEP, np.uint8(128))
    y = build.qdq(build.conv(x, 'conv', IN_CHANNELS, 8, 10, 0.01), 'y', HIDDEN_STEP, np.uint8(128))
    build.nodes += [helper.make_node('Mul', [y, build.constant('half', np.float32(0.5))], ['scaled'], name='mul'),
                    helper.make_node('DepthToSpace', ['scaled'], ['shuffled'], blocksize=2, mode='CRD', name='d2s')]
    out = build.qdq('shuffled', 'z', step_after, np.uint8(128))
    build.nodes.append(helper.make_node('Identity', [out], ['output'], name='output'))
    graph = helper.make_graph(
        build.nodes, 'shuffle_test',
        [helper.make_tensor_value_info('input', TensorProto.FLOAT, ['N', IN_CHANNELS, 'H', 'W'])],
        [helper.make_tensor_value_info('output', TensorProto.FLOAT, ['N', 2, 'H2', 'W2'])], build.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)], ir_version=8)


def test_scale_fold_shuffle_on_integers_and_requantization_keep_the_numbers(tmp_path):
    """The rewrites of the integer-kernel points change no output value, and leave ONNX Runtime one QLinearConv, a
    uint8 DepthToSpace and no float Mul (the Q/DQ after the shuffle has the folded step: the same tensor)."""
    x = _image()
    model = _conv_scale_shuffle(HIDDEN_STEP * 0.5)
    before = _outputs(_saved(model, tmp_path / 'before.onnx'), x)
    assert fold_scalar_multiplications(model) == 1
    assert upsampling_on_quantized(model, integer=True) == 1
    assert remove_requantization(model) == 1
    onnx.checker.check_model(model, full_check=True)
    path = _saved(model, tmp_path / 'after.onnx')
    np.testing.assert_array_equal(_outputs(path, x), before)
    kernels = onnxruntime_kernel_counts(path)
    assert kernels['QLinearConv'] == 1 and kernels['DepthToSpace'] == 1 and 'Mul' not in kernels
    assert kernels['QuantizeLinear'] == 1 and kernels['DequantizeLinear'] == 1  # the input's and the output's


def test_shuffle_for_tensorrt_reads_the_float_tensor(tmp_path):
    """tensorrt: the DepthToSpace reads the float convolution output and the Q/DQ pair (its DequantizeLinear with
    the folded scale) follows it; same numbers."""
    x = _image()
    model = _conv_scale_shuffle(HIDDEN_STEP * 0.3)
    before = _outputs(_saved(model, tmp_path / 'before.onnx'), x)
    assert fold_scalar_multiplications(model) == 1
    assert upsampling_on_quantized(model, integer=False) == 1
    producers, _ = graph_links(model.graph)
    shuffle = next(n for n in model.graph.node if n.op_type == 'DepthToSpace')
    assert producers[shuffle.input[0]].op_type == 'Conv'
    np.testing.assert_array_equal(_outputs(_saved(model, tmp_path / 'after.onnx'), x), before)
