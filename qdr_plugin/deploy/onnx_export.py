"""Export a (fake-)quantized network to an INT8 ONNX model with QuantizeLinear / DequantizeLinear nodes.

The exported file has one float32 input ``input`` (N x C x H x W, values in [0, 1], dynamic N, H, W) and one output
``output`` of the same layout. The learned step sizes are written as they are (no re-calibration). This module
exports (``torch.onnx``); the ONNX graph rewrites it applies for a target live in
:mod:`qdr_plugin.deploy.graph_rewrites`. Two targets:

``tensorrt``
    Explicit quantization as TensorRT wants it: int8 activations with zero point 0, int8 weights with per-channel
    scales on the output-channel axis (0 for Conv, 1 for ConvTranspose), Q/DQ at every convolution input and on both
    inputs of the residual additions, depth-to-space (pixel-shuffle) on dequantized float tensors.
``onnxruntime``
    The same numbers in the form ONNX Runtime's CPU provider runs as integer kernels: activations as uint8 (a symmetric
    int8 grid with zero point 0 is uint8 with zero point 128), and a QuantizeLinear fed only by a Relu gets zero point 0
    (:func:`~qdr_plugin.deploy.graph_rewrites.zero_point_of_relu_fed_quantizers`), so ONNX Runtime folds the Relu into
    it and ``DequantizeLinear -> Conv -> QuantizeLinear`` becomes one QLinearConv. For a network trained with
    ``quant.unsigned_relu: true`` those quantizers already are ``[0, 255]`` with zero point 0 and the file computes
    exactly the trained numbers. Otherwise there is one numerical difference: after a Relu the trained int8 grid stops
    at ``127 s``, the uint8 one at ``255 s`` (values above ``127.5 s`` are clipped in training, kept here). A
    convolution with too few output channels for ONNX Runtime's fast integer kernel gets zero filters
    (:func:`~qdr_plugin.deploy.graph_rewrites.widen_narrow_convolutions`). ONNX Runtime has no integer ConvTranspose: a
    transposed conv runs in float on its dequantized input and weight. (Rewriting a 2x2 / stride-2 one as a 1x1
    QLinearConv + uint8 DepthToSpace was measured slower on the EFM: ONNX Runtime's DepthToSpace and the layout
    transposes around it cost more than the float ConvTranspose.)

    On an x86 CPU without VNNI, ONNX Runtime's uint8 x int8 kernels saturate on int8 weights outside [-64, 63]. With
    ``no_vnni=True`` those weights are stored as uint8 with zero point 128 (:mod:`qdr_plugin.deploy.no_vnni`): the
    file is then exact on such CPUs too, but its integer convolutions run a slower kernel.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from qdr_plugin.archs.basicsr_defaults import example_size
from qdr_plugin.errors import UserError
from qdr_plugin.quant import is_quantized, quantizers, set_quant_enabled
from qdr_plugin.quant.fake_quant import STEP_MIN
from qdr_plugin.quant.onnx_qdq import integer_weight
from qdr_plugin.utils.atomic_write import atomic_output

from .graph_rewrites import (
    fold_scalar_multiplications,
    remove_requantization,
    upsampling_on_quantized,
    widen_narrow_convolutions,
    zero_point_of_relu_fed_quantizers,
)
from .no_vnni import unsigned_saturating_weights

TARGETS = ('onnxruntime', 'tensorrt')
OPSET = 17
INTEGER_BITS = 8
"""Bits of the integers an INT8 export stores (int8 weights, int8 / uint8 activations)."""


class ExportError(UserError, RuntimeError):
    """A network that cannot be exported; the message names the module or quantizer, and the fix."""


def _refuse_wide_quantizers(net: nn.Module) -> None:
    """Refuse quantizers wider than :data:`INTEGER_BITS`: their integers do not fit the file's 8-bit types (TensorRT
    takes only int8; ONNX Runtime runs 16-bit Q/DQ, opset 21, only in float)."""
    wide = [(name, q) for name, q in quantizers(net) if q.bits > INTEGER_BITS]
    if not wide:
        return
    name, q = wide[0]
    key, kind = ('weight_bits', 'weights') if q.axis is not None else ('act_bits', 'activations')
    count = f' (1 of {len(wide)} wider than {INTEGER_BITS} bits)' if len(wide) > 1 else ''
    raise ExportError(
        f"quantizer '{name}'{count} is {q.bits}-bit ({kind}: quant.{key} or quant.bits = {q.bits}), but the INT8 "
        f'export stores {INTEGER_BITS}-bit integers, which cannot hold its values: train with quant.bits <= '
        f'{INTEGER_BITS}, or export the FP32 network with --fp32.'
    )


def _prepare_quantizers(net: nn.Module, target: str) -> None:
    _refuse_wide_quantizers(net)
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


def export_onnx(
    net: nn.Module,
    path: str | Path,
    in_channels: int,
    target: str = 'onnxruntime',
    fp32: bool = False,
    opset: int = OPSET,
    no_vnni: bool = False,
) -> Path:
    """Write ``net`` as ONNX to ``path`` (INT8 Q/DQ for a quantized network, or FP32 with ``fp32=True``).

    The network is deep-copied: ``net`` itself is not touched. The file is written atomically (a complete new
    file or the previous content). Raises :class:`ExportError` when an operation of the network has no ONNX form
    (naming the module) or a quantizer is wider than 8 bits (naming it and ``quant.bits``). ``no_vnni``
    (``onnxruntime`` target): int8 weights that would saturate a CPU without VNNI are stored as uint8
    (:func:`~qdr_plugin.deploy.no_vnni.unsigned_saturating_weights`).
    """
    if target not in TARGETS:
        raise ExportError(f'target must be one of {TARGETS}, got {target!r}.')
    if no_vnni and (target != 'onnxruntime' or fp32):
        what = 'an FP32 export' if fp32 else f'target {target!r}'
        raise ExportError(f'no_vnni (--no-vnni) changes the int8 weights of an ONNX Runtime INT8 file, and this is '
                          f'{what}: export with --target onnxruntime, or leave out --no-vnni.')
    if opset < 13:
        raise ExportError(f'opset must be >= 13 (per-channel DequantizeLinear), got {opset}.')
    net = copy.deepcopy(net).eval()
    if fp32:
        set_quant_enabled(net, False)
    elif not is_quantized(net):
        raise ExportError('the network has no fake quantizers: export a QDR (quantized) checkpoint, or pass fp32.')
    else:
        _prepare_quantizers(net, target)
    path = Path(path)
    with atomic_output(path) as tmp:
        _trace(net, tmp, in_channels, opset)
        if not fp32:
            model = onnx.load(str(tmp))
            if rewrite_for_target(model, target) + (unsigned_saturating_weights(model) if no_vnni else 0):
                onnx.save(model, str(tmp))
    return path


def rewrite_for_target(model: onnx.ModelProto, target: str) -> int:
    """The graph rewrites of a traced INT8 export for ``target``, in place; returns how many places changed.

    Both targets: a dequantized tensor times a positive scalar becomes one DequantizeLinear
    (:func:`~qdr_plugin.deploy.graph_rewrites.fold_scalar_multiplications`), and a quantizer applied again to its own
    dequantized output is bypassed (:func:`~qdr_plugin.deploy.graph_rewrites.remove_requantization`); pixel shuffles
    and nearest up-samplings of quantized tensors run on the float tensor with the Q/DQ after them (``tensorrt``) or
    on the integers (``onnxruntime``; :func:`~qdr_plugin.deploy.graph_rewrites.upsampling_on_quantized`).
    ``onnxruntime`` also: zero point 0 after a Relu, narrow convolutions widened.
    """
    if target == 'tensorrt':
        return (fold_scalar_multiplications(model) + upsampling_on_quantized(model, integer=False)
                + remove_requantization(model))
    return (zero_point_of_relu_fed_quantizers(model) + fold_scalar_multiplications(model)
            + upsampling_on_quantized(model, integer=True) + remove_requantization(model)
            + widen_narrow_convolutions(model))


def _trace(net: nn.Module, path: Path, in_channels: int, opset: int) -> None:
    """``torch.onnx.export`` of ``net`` to ``path`` with the I/O contract's names and dynamic axes."""
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
