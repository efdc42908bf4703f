"""Turn a float network into a fake-quantized one: :func:`quantize_model`, and helpers around it."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from . import ops
from .bn_fold import fold_batchnorm, foldable_batchnorms
from .call_sites import call_sequence, count_calls, split_call_sites
from .config import QuantConfig
from .fake_quant import STEP_MIN, FakeQuantizer
from .modules import FLOAT_TO_QUANT
from .output_points import add_output_quantizers
from .sharing import example_input, tie_shared_quantizers

logger = logging.getLogger(__name__)

QUANTIZER_STATE_SUFFIXES = ('.step', '.zero_point', '.initialized')
WEIGHT_CLIP_LIMIT = 4.0  # a weight step may clip a channel's largest weight to no less than 1/4 of it
ACT_STEP_MIN = 1e-6


REWRITES: dict[str, Callable[[nn.Module], int]] = {}
"""Structural rewrites :func:`quantize_model` applies first, by qualified name (see :func:`register_rewrite`)."""


def register_rewrite(rewrite: Callable[[nn.Module], int]) -> Callable[[nn.Module], int]:
    """Decorator: have :func:`quantize_model` call ``rewrite(model)`` before it converts the layers.

    A rewrite replaces, in place, blocks with no quantizable layer by an equivalent form that has one (e.g.
    :func:`qdr_plugin.archs.basicsr_defaults.reparameterize_ecb`: ECBSR's functional convolutions into ``nn.Conv2d``)
    and returns how many blocks it replaced. It must give the same function in eval mode and the same module names
    on every call, so that a quantized checkpoint reloads. Registering a function again (a re-imported module)
    replaces the previous registration.
    """
    REWRITES[f'{rewrite.__module__}.{rewrite.__qualname__}'] = rewrite
    return rewrite


POINT_REWRITES: dict[str, Callable[[nn.Module], int]] = {}
"""Rewrites :func:`quantize_model` applies with ``config.integer_kernel_points`` only (see
:func:`register_point_rewrite`)."""


def register_point_rewrite(rewrite: Callable[[nn.Module], int]) -> Callable[[nn.Module], int]:
    """Decorator: like :func:`register_rewrite`, for a rewrite that gives a block quantization points an integer
    runtime needs (e.g. a residual ``+`` written as an :class:`~qdr_plugin.quant.ops.Add`, whose inputs are then
    quantized); :func:`quantize_model` applies it only with ``config.integer_kernel_points``, so a checkpoint trained
    without them reloads."""
    POINT_REWRITES[f'{rewrite.__module__}.{rewrite.__qualname__}'] = rewrite
    return rewrite


def _kept_fp32(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


_WEIGHTED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def _without_ends(model: nn.Module, plan: list, example: torch.Tensor | None, config: QuantConfig) -> list:
    """``plan`` without the ends of the data flow ``config.float_ends`` names: the convolution / linear layer a
    forward pass on ``example`` calls first and / or last, and, with ``config.float_end_ops``, the element-wise ops
    (:mod:`qdr_plugin.quant.ops` points) it calls only before the first / only after the last call of any of those
    layers (an input residual, the global residual add on the output)."""
    layers = {f'{id(parent)}.{name}': getattr(parent, name) for parent, name, _ in plan}
    try:
        sequence = call_sequence(model, layers, example)
    except RuntimeError as error:
        raise ValueError(f'quantize_model: {type(model).__name__} does not run on the example input '
                         f'({str(error).splitlines()[0]}), so its first and last layers are unknown; pass example= '
                         '(one network input).') from error
    weighted = [i for i, key in enumerate(sequence) if isinstance(layers[key], _WEIGHTED)]
    if not weighted:
        return plan
    order = [key for key in dict.fromkeys(sequence) if isinstance(layers[key], _WEIGHTED)]
    kept = set()
    if 'first' in config.float_ends:
        kept.add(order[0])
        if config.float_end_ops:
            kept |= set(sequence[:weighted[0]]) - set(sequence[weighted[0]:])
    if 'last' in config.float_ends:
        kept.add(order[-1])
        if config.float_end_ops:
            kept |= set(sequence[weighted[-1] + 1:]) - set(sequence[:weighted[-1] + 1])
    return [step for step in plan if f'{id(step[0])}.{step[1]}' not in kept]


def quantize_model(
    model: nn.Module, config: QuantConfig | None = None, example: torch.Tensor | None = None
) -> nn.Module:
    """Apply the registered rewrites (:func:`register_rewrite`), fold BatchNorm, then replace every ``Conv2d`` /
    ``ConvTranspose2d`` / ``Linear`` and every :mod:`qdr_plugin.quant.ops` point (``Add``, ``Sub``, ``Mul``,
    ``Concat``, ``Upsample``) by its quantized counterpart, in place.

    Modules whose name matches a ``config.keep_fp32`` pattern stay float, and so do the first and the last
    convolution / linear layer a forward pass on ``example`` calls, as ``config.float_ends`` says, with the
    element-wise ops outside them when ``config.float_end_ops`` (and every concatenation with ``scheme: observer``).
    With ``config.integer_kernel_points``, a convolution whose output reaches float work gets an output quantizer
    (:mod:`qdr_plugin.quant.output_points`). A layer the
    network calls several times per forward pass (a recurrent stage) keeps one weight quantizer and gets one
    activation quantizer per call (:mod:`qdr_plugin.quant.call_sites`). Activation quantizers that receive the
    same tensor are then tied into one (:func:`qdr_plugin.quant.tie_shared_quantizers`, one forward pass on
    ``example``, by default a zero image when the network starts with a Conv2d). Weight step sizes are initialised
    here; activation step sizes need :func:`qdr_plugin.quant.calibrate` (or a checkpoint). Returns ``model``.

    Raises ``ValueError`` when nothing could be quantized, a BatchNorm is left that could not be folded, or the
    network does not run on the example input.
    """
    config = config or QuantConfig()
    if is_quantized(model):
        raise ValueError('quantize_model: the network is already quantized.')
    batchnorms = {n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    unfoldable = sorted(batchnorms - set(foldable_batchnorms(model))) if config.fold_bn else sorted(batchnorms)
    if unfoldable:
        raise ValueError(
            f'quantize_model: BatchNorm layers {unfoldable} do not directly follow a Conv2d in an nn.Sequential and '
            'cannot be folded; fold them into the arch before QAT (the network was left unchanged).'
        )
    for rewrite in [*REWRITES.values(), *(POINT_REWRITES.values() if config.integer_kernel_points else ())]:
        rewrite(model)
    plan = [
        (parent, child_name, FLOAT_TO_QUANT[type(child)])
        for parent_name, parent in model.named_modules()
        for child_name, child in parent.named_children()
        if type(child) in FLOAT_TO_QUANT
        and not (config.observes and isinstance(child, ops.Concat))
        and not _kept_fp32(f'{parent_name}.{child_name}' if parent_name else child_name, config.keep_fp32)
    ]
    example = example_input(model) if example is None else example
    if config.float_ends:
        plan = _without_ends(model, plan, example, config)
    if not plan:
        kept = f' and its {" and ".join(config.float_ends)} layer (keep_first_last)' if config.float_ends else ''
        raise ValueError(f'quantize_model: {type(model).__name__} has no Conv2d, ConvTranspose2d or Linear layer '
                         f'outside keep_fp32={config.keep_fp32}{kept}; there is nothing to quantize.')
    if config.fold_bn:
        fold_batchnorm(model)
    try:
        calls = count_calls(model, {f'{id(parent)}.{name}': getattr(parent, name) for parent, name, _ in plan}, example)
        for parent, child_name, quant_cls in plan:
            setattr(parent, child_name, quant_cls.from_float(getattr(parent, child_name), config))
        split = sum(
            split_call_sites(model, getattr(parent, name), calls[f'{id(parent)}.{name}'])
            for parent, name, _ in plan
            if calls[f'{id(parent)}.{name}'] > 1
        )
        outputs = _output_points(model, plan, calls, config, example)
        tied = tie_shared_quantizers(model, example, config.unsigned_relu)
    except RuntimeError as error:  # e.g. a channel count the first layer does not show (RRDBNet's pixel-unshuffle)
        given = 'the given example' if example is not None else 'a zero image shaped after its first layer'
        raise ValueError(
            f'quantize_model: {type(model).__name__} does not run on {given} ({str(error).splitlines()[0]}); pass '
            'example= (one network input, e.g. qdr_plugin.archs.basicsr_defaults.example_input(net, network_opt)).'
        ) from error
    if split:
        logger.info('quantize_model: %d activation quantizers of layers called several times per forward pass now '
                    'have one quantizer per call.', split)
    if outputs:
        logger.info('quantize_model: %d convolutions have an output quantizer (their output reaches float work).',
                    len(outputs))
    logger.info('quantize_model: %d layers quantized (%d-bit weights, %d-bit activations, %s), %d quantizers tied.',
                len(plan), config.weight_bits, config.act_bits,
                'symmetric' if config.act_symmetric else 'asymmetric', tied)
    return model


def _output_points(
    model: nn.Module, plan: list, calls: dict[str, int], config: QuantConfig, example: torch.Tensor | None
) -> list[str]:
    """With ``config.integer_kernel_points``, :func:`add_output_quantizers` on the converted layers called once per
    forward pass (a layer called several times keeps inputs-only quantization); returns the names it gave one."""
    if not config.integer_kernel_points or example is None:
        return []
    names = {id(module): name for name, module in model.named_modules()}
    repeated = [names[id(getattr(parent, child))] for parent, child, _ in plan if calls[f'{id(parent)}.{child}'] > 1]
    return add_output_quantizers(model, config, example, repeated)


@torch.no_grad()
def project_step_sizes(model: nn.Module) -> int:
    r"""Keep every learned step size in its valid range after an optimizer step; returns how many were moved.

    Adam moves a parameter by about its learning rate per step whatever the gradient's size, and a per-channel
    weight step is often only ~1e-3, so a few dozen same-signed updates can push it through zero. A step at or
    below zero silences its channel for good (every weight rounds to 0, and no gradient reaches the weights) and
    has no INT8 form (ONNX Runtime's int32 bias ``b / (s_x s_w)`` overflows). So, after each update,

    .. math::

        s_{w,c} \leftarrow \max\Big(s_{w,c}, \frac{\max_i |w_{c,i}|}{4\, q_{max}}\Big), \qquad
        s_a \leftarrow \max(s_a, 10^{-6})

    (a weight step may clip a channel's largest weight to a quarter of it, no further).
    """
    moved = 0
    for module in model.modules():
        wq = getattr(module, 'weight_quant', None)
        if isinstance(wq, FakeQuantizer) and wq.enabled:
            w = module.weight.detach().transpose(0, wq.axis).reshape(module.weight.shape[wq.axis], -1)
            floor = (w.abs().amax(dim=1) / (WEIGHT_CLIP_LIMIT * wq.qmax)).clamp_min(STEP_MIN)
            low = wq.step < floor
            moved += int(low.sum())
            wq.step.copy_(torch.maximum(wq.step, floor))
    for _, q in quantizers(model):
        if q.axis is None and bool(q.step.lt(ACT_STEP_MIN).any()):
            moved += int(q.step.lt(ACT_STEP_MIN).sum())
            q.step.clamp_(min=ACT_STEP_MIN)
    return moved


def quantizers(model: nn.Module) -> Iterator[tuple[str, FakeQuantizer]]:
    """Every fake quantizer in ``model`` with its name."""
    for name, module in model.named_modules():
        if isinstance(module, FakeQuantizer):
            yield name, module


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds any fake quantizer."""
    return next(quantizers(model), None) is not None


def is_quantized_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict was saved from a quantized network (it holds quantizer state)."""
    return any(k.endswith('.initialized') and (k[: -len('.initialized')] + '.step') in state_dict for k in state_dict)


def set_quant_enabled(model: nn.Module, enabled: bool) -> None:
    """Switch every quantizer on or off (off: the network computes in FP32 with the same weights)."""
    for _, q in quantizers(model):
        q.enabled = enabled


def quantizer_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learnable step sizes and zero points (they want no weight decay)."""
    return [p for _, q in quantizers(model) for p in q.parameters(recurse=False) if p.requires_grad]
