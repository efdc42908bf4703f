"""The models a benchmark compares: ``NAME=PATH`` specs, loaded as restorers with their runtime and precision.

- ``.pth``: a basicsr checkpoint, rebuilt from the options' ``network_g`` (and ``quant`` block) with
  :func:`qdr_plugin.utils.checkpoint.load_networks` and run by PyTorch; a quantized (QDR) checkpoint runs as the
  fake-quantized INT8 network, a plain one in FP32.
- ``.onnx``: run by ONNX Runtime on the CPU; INT8 when the graph holds quantization nodes (QuantizeLinear,
  QLinearConv, ...), FP32 otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from basicsr.archs import build_network
from torch import nn

from qdr_plugin.deploy.graph_rewrites import constant_values
from qdr_plugin.deploy.infer import Restorer, onnx_restorer, torch_restorer
from qdr_plugin.deploy.options import input_channels
from qdr_plugin.errors import UserError
from qdr_plugin.quant import is_quantized
from qdr_plugin.utils.checkpoint import load_networks
from qdr_plugin.utils.complexity import count_macs, count_parameters

MODEL_SUFFIXES = ('.pth', '.onnx')
INT8_ONNX_OPS = frozenset({'QuantizeLinear', 'QLinearConv', 'QLinearMatMul', 'ConvInteger', 'MatMulInteger'})
_WEIGHTED_ONNX_OPS = ('Conv', 'ConvTranspose', 'Gemm', 'MatMul')
_WEIGHTED_MODULES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@dataclass
class ModelSpec:
    """One ``--model NAME=PATH`` argument."""

    name: str
    path: Path


@dataclass
class BenchModel:
    """A loaded model: how to run it and what it is.

    ``params`` / ``macs`` (at ``1 x channels x size x size``) are ``None`` when unknown (an ONNX file that is not an
    export of the options' ``network_g``); ``network`` is the PyTorch network (``None`` for ONNX models).
    """

    name: str
    path: Path
    runtime: str
    precision: str
    channels: int
    restore: Restorer
    params: int | None = None
    macs: int | None = None
    network: nn.Module | None = None


def parse_model_spec(text: str) -> ModelSpec:
    """``'NAME=PATH'`` -> :class:`ModelSpec`; ``ValueError`` with the expected form when the syntax is wrong."""
    name, sep, path = text.partition('=')
    name, path = name.strip(), path.strip()
    if not sep or not name or not path:
        raise UserError(
            f"--model '{text}': expected NAME=PATH with PATH a .pth checkpoint or an .onnx model, e.g. "
            '--model int8=model.onnx.'
        )
    if Path(path).suffix.lower() not in MODEL_SUFFIXES:
        raise UserError(
            f"--model '{text}': {path} is neither a .pth checkpoint nor an .onnx model; give one of those "
            '(the file type decides the runtime).'
        )
    return ModelSpec(name, Path(path))


def weight_count(net: nn.Module) -> int:
    """Number of convolution / linear weights (no biases): what an export of ``net`` stores, whatever its form."""
    return sum(m.weight.numel() for m in net.modules() if isinstance(m, _WEIGHTED_MODULES))


def _onnx_weight_count(graph: onnx.GraphProto) -> int:
    """Number of convolution / GEMM weights of an ONNX graph (float initializers or int8 ones behind a
    DequantizeLinear), not counting all-zero filters (the padding :func:`qdr_plugin.deploy.widen_narrow_convolutions`
    adds for ONNX Runtime's fast kernel)."""
    values = constant_values(graph)
    producers = {out: node for node in graph.node for out in node.output}
    total = 0
    for node in graph.node:
        if node.op_type not in _WEIGHTED_ONNX_OPS or len(node.input) < 2:
            continue
        name = node.input[1]
        dequantize = producers.get(name)
        if dequantize is not None and dequantize.op_type == 'DequantizeLinear':
            name = dequantize.input[0]
        if name in values:
            weight = values[name]
            if weight.ndim < 2:
                total += weight.size
                continue
            filters = int(np.count_nonzero(weight.reshape(weight.shape[0], -1).any(axis=1)))
            total += filters * math.prod(weight.shape[1:])
    return total


def _complexity(net: nn.Module, channels: int, size: int) -> tuple[int, int]:
    return count_parameters(net), count_macs(net, (1, channels, size, size))


def _load_checkpoint(spec: ModelSpec, opt: Mapping[str, Any] | None, size: int) -> BenchModel:
    if opt is None:
        raise UserError(
            f'--model {spec.name}={spec.path} is a checkpoint: give -opt X.yml, the options file it was trained '
            'with (its network_g builds the network).'
        )
    net, _ = load_networks(opt['network_g'], opt.get('quant'), str(spec.path), f'--model {spec.name}=')
    channels = input_channels(dict(opt))
    params, macs = _complexity(net, channels, size)
    precision = 'int8' if is_quantized(net) else 'fp32'
    return BenchModel(spec.name, spec.path, 'pytorch', precision, channels, torch_restorer(net), params, macs, net)


def _load_onnx(spec: ModelSpec, arch: tuple[nn.Module, int] | None, threads: int, size: int) -> BenchModel:
    try:
        graph = onnx.load(str(spec.path), load_external_data=False).graph
    except Exception as error:  # noqa: BLE001  (protobuf raises its own types)
        raise UserError(f'{spec.path}: not a readable ONNX model ({str(error).splitlines()[0]}).') from error
    dims = graph.input[0].type.tensor_type.shape.dim if graph.input else []
    if len(dims) != 4 or not dims[1].HasField('dim_value'):
        raise UserError(f'{spec.path}: its input is not N x C x H x W with a fixed C; export it with basicsr export.')
    channels = dims[1].dim_value
    precision = 'int8' if any(node.op_type in INT8_ONNX_OPS for node in graph.node) else 'fp32'
    params = macs = None
    if arch is not None and _onnx_weight_count(graph) == weight_count(arch[0]):
        params, macs = _complexity(*arch, size)
    restore = onnx_restorer(spec.path, threads)
    return BenchModel(spec.name, spec.path, 'onnxruntime', precision, channels, restore, params, macs)


def load_model(
    spec: ModelSpec, opt: Mapping[str, Any] | None, threads: int, size: int
) -> BenchModel:
    """Load ``spec`` (see the module docstring). ``opt`` is the options file (``network_g``, ``quant``), needed for
    checkpoints; an ONNX file gets the parameter and MAC counts of ``network_g`` when its
    weights have the same count (an export of that network), none otherwise. ``threads``: ONNX Runtime intra-op
    threads; ``size``: side of the square input the MACs are counted on. A file that cannot be loaded raises a
    one-line :class:`~qdr_plugin.errors.UserError`."""
    if not spec.path.is_file():
        raise UserError(f'model file {spec.path} (--model {spec.name}=...) does not exist; check the path.')
    if spec.path.suffix.lower() == '.pth':
        return _load_checkpoint(spec, opt, size)
    arch = None
    if opt is not None:
        arch = build_network(dict(opt['network_g'])).eval(), input_channels(dict(opt))
    return _load_onnx(spec, arch, threads, size)
