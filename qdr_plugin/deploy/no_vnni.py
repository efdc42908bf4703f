"""INT8 files that ONNX Runtime runs exactly on an x86 CPU without VNNI: weights stored as uint8 where int8 would
saturate.

ONNX Runtime's x86 integer convolutions (QLinearConv, also the fast symmetric kernel ``MlasConvSym``) multiply uint8
activations by int8 weights. A CPU with VNNI (AVX512-VNNI, AVX-VNNI) accumulates the products in int32. Without it
(AVX2, or AVX-512 without VNNI) the kernels use ``VPMADDUBSW``, which adds pairs of products in int16 and saturates:

    sat16(a_0 w_0 + a_1 w_1),   a in [0, 255], w in [-128, 127]

With ``a`` up to 255 a pair stays inside int16 only while ``w`` is in :data:`SATURATION_FREE_WEIGHTS` ``[-64, 63]``
(``2 * 255 * 64 = 32640 <= 32768``). A weight outside it can clip a pair sum, and the error grows through the later
layers (measured on an AVX2 CPU: parity 19-33 dB where a VNNI CPU gives more than 50 dB).

There are two fixes, and both keep the numbers the network was trained with:

- :func:`unsigned_saturating_weights` stores each convolution weight outside ``[-64, 63]`` as uint8 with zero
  point 128 (``w_u8 = w_s8 + 128``, the same values). ONNX Runtime then runs a uint8 x uint8 kernel, which widens to
  int16 before it multiplies and never saturates. That kernel is slower than the symmetric one. This is
  ``basicsr export --no-vnni``.
- Training with ``quant.weight_bits: 7`` keeps every weight in ``[-63, 63]``. The default file is then exact on
  every CPU, and it still runs the fast kernel.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .graph_rewrites import constant_values, graph_links, remove_dead_nodes

SATURATION_FREE_WEIGHTS = (-64, 63)
"""The int8 weight range whose products with uint8 activations never saturate ``VPMADDUBSW``'s int16 pair sums."""
WEIGHTED_OPS = ('Conv', 'MatMul', 'Gemm')
WEIGHT_LAYOUT_OPS = ('Transpose', 'Reshape')
UINT8_ZERO_POINT = 128
CPUINFO = Path('/proc/cpuinfo')


def int8_weights_saturate(cpuinfo: str | None = None) -> bool:
    """Whether this CPU runs ONNX Runtime's uint8 x int8 kernels with saturating int16 pair sums: an x86 CPU
    without VNNI (no ``avx512_vnni`` / ``avx_vnni`` flag). ``cpuinfo`` is the text of :data:`CPUINFO`; it is read
    when ``None``. Returns ``False`` when the flags cannot be read (not Linux) or the CPU is not x86."""
    if cpuinfo is None:
        if platform.machine().lower() not in ('x86_64', 'amd64', 'i686', 'x86'):
            return False
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return False
    flags = re.search(r'^flags\s*:(.*)$', cpuinfo, re.MULTILINE)
    if flags is None:
        return False
    names = set(flags.group(1).split())
    return 'ssse3' in names and not names & {'avx512_vnni', 'avx_vnni'}


def _saturating_weight_dequantizers(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    """The DequantizeLinear nodes that feed a weight input of a :data:`WEIGHTED_OPS` node (directly or through
    :data:`WEIGHT_LAYOUT_OPS`), read a constant int8
    tensor with zero points 0 and hold a value outside :data:`SATURATION_FREE_WEIGHTS`, with that tensor."""
    graph = model.graph
    values = constant_values(graph)
    producers, _ = graph_links(graph)
    low, high = SATURATION_FREE_WEIGHTS
    found: dict[str, tuple[onnx.NodeProto, np.ndarray]] = {}
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        dq = producers.get(node.input[1])
        while dq is not None and dq.op_type in WEIGHT_LAYOUT_OPS:  # a Linear's weight: DequantizeLinear -> Transpose
            dq = producers.get(dq.input[0])
        if dq is None or dq.op_type != 'DequantizeLinear' or dq.output[0] in found:
            continue
        weight = values.get(dq.input[0])
        zero = values.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        if weight is None or weight.dtype != np.int8 or (zero is not None and np.any(zero)):
            continue
        if weight.min() < low or weight.max() > high:
            found[dq.output[0]] = (dq, weight)
    return list(found.values())


def saturating_weight_count(model: onnx.ModelProto) -> int:
    """How many int8 weight tensors of ``model`` hold a value outside :data:`SATURATION_FREE_WEIGHTS`. A CPU without
    VNNI (:func:`int8_weights_saturate`) runs their layers inexactly."""
    return len(_saturating_weight_dequantizers(model))


def unsigned_saturating_weights(model: onnx.ModelProto) -> int:
    """Store every int8 weight outside :data:`SATURATION_FREE_WEIGHTS` as uint8 with zero point 128, in place.
    Returns how many weight tensors changed.

    ``DequantizeLinear(w_s8, s, 0)`` becomes ``DequantizeLinear(w_s8 + 128, s, 128)``. That is the same float weight,
    and ONNX Runtime runs it as a uint8 x uint8 QLinearConv, which does not saturate. Weights already inside
    ``[-64, 63]`` (``quant.weight_bits: 7``) stay int8 and keep the fast symmetric kernel.
    """
    graph = model.graph
    found = _saturating_weight_dequantizers(model)
    values = constant_values(graph)
    for dq, weight in found:
        prefix = dq.output[0]
        unsigned = (weight.astype(np.int16) + UINT8_ZERO_POINT).astype(np.uint8)
        scale = values[dq.input[1]]
        zero = np.full(scale.shape, UINT8_ZERO_POINT, dtype=np.uint8)
        graph.initializer.extend([numpy_helper.from_array(unsigned, f'{prefix}_uint8'),
                                  numpy_helper.from_array(zero, f'{prefix}_uint8_zero_point')])
        inputs = [f'{prefix}_uint8', dq.input[1], f'{prefix}_uint8_zero_point']
        del dq.input[:]
        dq.input.extend(inputs)
    if found:
        remove_dead_nodes(graph, ('Constant',))
    return len(found)
