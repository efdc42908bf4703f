"""The rules of the ``train:`` block as :class:`~qdr_plugin.models.qdr_model.QDRModel` reads it.

QDRModel (on basicsr's ``SRModel``) reads the iteration counts, ``optim_g`` (Adam, AdamW or SGD, see
:data:`OPTIMIZERS`), ``scheduler`` (basicsr's, :data:`SCHEDULERS`), the distances ``pixel_opt``, ``dfd_opt`` and
``output_kd_opt``, and ``lmr_opt`` (whose own rules are
:meth:`~qdr_plugin.losses.lmr.LearnableMagnitudeReweighting.check_options`). :func:`check_train_options` holds
the rules; ``QDRModel.check_train_options`` is it, called by the model before training and by the pre-flight
checker.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch
from basicsr.models import lr_scheduler
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from qdr_plugin.archs.basicsr_defaults import default_dfd_layer
from qdr_plugin.losses.lmr import LearnableMagnitudeReweighting
from qdr_plugin.models.curriculum import check_curriculum_options
from qdr_plugin.option_rules import (
    MISSING,
    OptionsError,
    check_against_signature,
    check_registered,
    did_you_mean,
    is_int,
    is_number,
    need_bool,
    need_dict,
    need_int,
    need_number,
    signature,
)

__all__ = ['DFD_KEYS', 'OPTIMIZERS', 'RELATIONAL_KEYS', 'SCHEDULERS', 'TRAIN_KEYS', 'check_distill_layers',
           'check_loss', 'check_train_options', 'distill_layers', 'relational_layers']

DFD_KEYS = ('layer', 'decoder_stages', 'decoder_layers')
"""``train.dfd_opt`` keys of QDRModel's own (the others go to the basicsr loss)."""
RELATIONAL_KEYS = ('layer',)
"""``train.relational_opt`` keys of QDRModel's own."""

TRAIN_KEYS = (
    'fp32_warmup_iter', 'total_iter', 'warmup_iter', 'optim_g', 'scheduler', 'pixel_opt', 'pixel_target', 'dfd_opt',
    'output_kd_opt', 'relational_opt', 'lmr_opt', 'ema_decay', 'memory_check', 'step_lr_mult', 'curriculum',
)
"""``train:`` keys QDRModel reads; an unknown key close to one of them (``dfd_otp``) is a typo."""

PIXEL_TARGETS = ('gt', 'teacher')
"""``train.pixel_target``: what ``L_rec`` compares the student's output with during QAT."""

OPTIMIZERS = {'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW, 'SGD': torch.optim.SGD}
"""``train.optim_g.type`` values QDRModel builds."""

SCHEDULERS = {
    'MultiStepLR': lr_scheduler.MultiStepRestartLR,
    'MultiStepRestartLR': lr_scheduler.MultiStepRestartLR,
    'CosineAnnealingRestartLR': lr_scheduler.CosineAnnealingRestartLR,
}
"""``train.scheduler.type`` values basicsr's ``SRModel.setup_schedulers`` builds."""

NOT_A_DISTANCE = ('GANLoss', 'MultiScaleGANLoss', 'PerceptualLoss', 'WeightedTVLoss')
LOSS_REDUCTIONS = ('mean', 'sum')
_TYPO_CUTOFF = 0.75


def check_train_options(train: Mapping[str, Any], path: str = 'train', scheduler_required: bool = True) -> None:
    """The rules of QDRModel's ``train:`` block; raises :class:`~qdr_plugin.option_rules.OptionsError` at
    ``<path>.<key>``. ``scheduler_required=False``: a missing ``scheduler`` is accepted (a front whose schedule is
    given elsewhere, e.g. mmengine's ``param_scheduler``).

    ``total_iter`` (>= 0) and ``fp32_warmup_iter`` (0 to ``total_iter``; equal to it, the run is the FP32 stage
    alone, continued into QAT by resuming with a larger ``total_iter``), ``warmup_iter`` an integer, no
    ``ema_decay`` > 0, ``optim_g`` (:data:`OPTIMIZERS`, ``lr`` > 0), ``step_lr_mult`` > 0 (the step sizes'
    learning rate over the weights'), ``scheduler`` (:data:`SCHEDULERS`, its iteration lists),
    ``pixel_opt`` required, ``pixel_target`` ``gt`` / ``teacher``, ``dfd_opt`` / ``output_kd_opt`` /
    ``relational_opt`` distances (:func:`check_loss`), ``curriculum`` (:mod:`.curriculum`), ``lmr_opt`` only with
    ``dfd_opt``, ``memory_check`` ``true`` / ``false`` (read by the pre-flight check only). An empty or ``~``
    ``dfd_opt`` / ``output_kd_opt`` / ``lmr_opt`` is off.
    """
    for key, value in train.items():
        close = difflib.get_close_matches(str(key), TRAIN_KEYS, n=1, cutoff=_TYPO_CUTOFF)
        if key not in TRAIN_KEYS and close:
            raise OptionsError(f'{path}.{key}', f'unknown key {key!r}', value,
                               f"Did you mean '{close[0]}'? QDRModel would silently ignore it.")
    _check_iterations(train, path)
    need_bool(train, path, 'memory_check')
    _check_optimizer(train, path)
    need_number(train, path, 'step_lr_mult', above=True, example='0.1')
    if scheduler_required or train.get('scheduler') is not None:
        _check_scheduler(train, path)
    pixel = need_dict(train, path, 'pixel_opt', required=True,
                      example='pixel_opt: {type: L1Loss, loss_weight: 1.0}; QDRModel always uses it')
    check_loss(pixel, f'{path}.pixel_opt', distance=True)
    target = train.get('pixel_target', 'gt')
    if target not in PIXEL_TARGETS:
        raise OptionsError(f'{path}.pixel_target', 'must be gt or teacher', target,
                           'gt: L_rec against the ground truth; teacher: against the FP32 teacher\'s output (for a '
                           'published network fine-tuned on data that is not its training data).')
    dfd = need_dict(train, path, 'dfd_opt')
    if dfd:
        check_loss(dfd, f'{path}.dfd_opt', ours=DFD_KEYS, distance=True)
        _check_layers(dfd, f'{path}.dfd_opt', 'layer')
        _check_layers(dfd, f'{path}.dfd_opt', 'decoder_layers')
        need_bool(dfd, f'{path}.dfd_opt', 'decoder_stages')
    okd = need_dict(train, path, 'output_kd_opt')
    if okd:
        check_loss(okd, f'{path}.output_kd_opt', distance=True)
    relational = need_dict(train, path, 'relational_opt')
    if relational:
        check_loss(relational, f'{path}.relational_opt', ours=RELATIONAL_KEYS, distance=True)
        _check_layers(relational, f'{path}.relational_opt', 'layer')
    curriculum = need_dict(train, path, 'curriculum')
    if curriculum:
        check_curriculum_options(curriculum, f'{path}.curriculum')
    lmr = need_dict(train, path, 'lmr_opt')
    if lmr:
        if not dfd:
            raise OptionsError(f'{path}.lmr_opt', f'balances reconstruction against DFD, but {path}.dfd_opt is not set',
                               lmr, 'Add dfd_opt: {type: L1Loss, loss_weight: 1.0}, or remove lmr_opt.')
        LearnableMagnitudeReweighting.check_options(lmr, f'{path}.lmr_opt')


def check_loss(block: Mapping[str, Any], path: str, ours: tuple[str, ...] = (), distance: bool = False) -> None:
    """A basicsr loss block: a registered ``type`` (with ``distance``: one comparing two tensors), its arguments
    (minus ``ours``), ``loss_weight`` >= 0 and a scalar ``reduction``."""
    loss = check_registered(block, path, LOSS_REGISTRY, 'loss')
    if distance and loss.__name__ in NOT_A_DISTANCE:
        raise OptionsError(f'{path}.type', 'is not a distance between two tensors', block['type'],
                           'Use L1Loss, MSELoss or CharbonnierLoss.')
    check_against_signature(block, path, loss, ours=ours)
    need_number(block, path, 'loss_weight', example='1.0')
    sig = signature(loss)
    reduction = block.get('reduction', 'mean')
    if sig is not None and 'reduction' in sig.parameters and reduction not in LOSS_REDUCTIONS:
        raise OptionsError(f'{path}.reduction', 'must be mean or sum: the loss must be a scalar', reduction,
                           'Write reduction: mean.')


def _check_iterations(train: Mapping[str, Any], path: str) -> None:
    total = need_int(train, path, 'total_iter', 0, required=True, example='2000')
    warmup = need_int(train, path, 'fp32_warmup_iter', 0, example='1000', default=0)
    if warmup > total:
        raise OptionsError(f'{path}.fp32_warmup_iter', f'must be <= {path}.total_iter ({total}): the run would end '
                           'inside the FP32 warm-up', warmup,
                           'Lower fp32_warmup_iter below total_iter for QAT to start, or raise total_iter.')
    warmup_iter = train.get('warmup_iter')
    if warmup_iter is not None and not is_int(warmup_iter):
        raise OptionsError(f'{path}.warmup_iter', 'must be an integer (-1: no warm-up)', warmup_iter,
                           'Write warmup_iter: -1.')
    ema = train.get('ema_decay')
    if ema is not None and not is_number(ema):
        raise OptionsError(f'{path}.ema_decay', 'must be a number', ema, 'Remove ema_decay (QDRModel has no EMA).')
    if ema is not None and ema > 0:
        raise OptionsError(f'{path}.ema_decay', 'is not supported by QDRModel', ema, 'Remove ema_decay or set it to 0.')


def _check_optimizer(train: Mapping[str, Any], path: str) -> None:
    optim = need_dict(train, path, 'optim_g', required=True, example='optim_g: {type: Adam, lr: 1.0e-3}')
    optim_type = optim.get('type', MISSING)
    if optim_type not in OPTIMIZERS:
        raise OptionsError(f'{path}.optim_g.type', 'QDRModel supports only these optimizers', optim_type,
                           did_you_mean(optim_type, OPTIMIZERS))
    need_number(optim, f'{path}.optim_g', 'lr', above=True, required=True, example='1.0e-3')
    check_against_signature(optim, f'{path}.optim_g', OPTIMIZERS[optim_type], given_by_caller=('params',))
    _check_optimizer_arguments(optim, f'{path}.optim_g')


def _check_optimizer_arguments(optim: Mapping[str, Any], path: str) -> None:
    """The numbers torch's optimizers take: ``betas`` two numbers in [0, 1), ``eps`` > 0, ``weight_decay``,
    ``momentum`` and ``dampening`` >= 0."""
    betas = optim.get('betas')
    if betas is not None and not (isinstance(betas, (list, tuple)) and len(betas) == 2
                                  and all(is_number(b) and 0 <= b < 1 for b in betas)):
        raise OptionsError(f'{path}.betas', 'must be two numbers in [0, 1): the decay rates of the two moments',
                           betas, 'Write betas: [0.9, 0.999].')
    need_number(optim, path, 'eps', above=True, example='1.0e-8')
    for key in ('weight_decay', 'momentum', 'dampening'):
        need_number(optim, path, key, example='0.0')


def _check_scheduler(train: Mapping[str, Any], path: str) -> None:
    sched = need_dict(train, path, 'scheduler', required=True,
                      example='scheduler: {type: MultiStepLR, milestones: [1000], gamma: 0.5}')
    sched_type = sched.get('type', MISSING)
    if sched_type not in SCHEDULERS:
        raise OptionsError(f'{path}.scheduler.type', 'basicsr implements only these schedulers', sched_type,
                           did_you_mean(sched_type, SCHEDULERS))
    check_against_signature(sched, f'{path}.scheduler', SCHEDULERS[sched_type], given_by_caller=('optimizer',))
    steps_key, lowest, paired = (('periods', 1, 'periods') if sched_type == 'CosineAnnealingRestartLR'
                                 else ('milestones', 0, 'restarts'))
    steps = sched[steps_key]
    if not isinstance(steps, list) or not all(is_int(v) and v >= lowest for v in steps):
        raise OptionsError(f'{path}.scheduler.{steps_key}', 'must be a list of iteration counts', steps,
                           f'Write e.g. {steps_key}: [1000, 2000].')
    first, second = sched.get(paired, [0]), sched.get('restart_weights', [1])
    if isinstance(first, list) and isinstance(second, list) and len(first) != len(second):
        raise OptionsError(f'{path}.scheduler.restart_weights', f'needs one entry per {paired} entry ({len(first)})',
                           second, f'Give restart_weights as many entries as {paired} (basicsr asserts it).')


def _check_layers(block: Mapping[str, Any], path: str, key: str) -> None:
    value = block.get(key)
    if value is None:
        return
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise OptionsError(f'{path}.{key}', 'must be a module name or a list of module names', value,
                           f'Write e.g. {key}: bottleneck or {key}: [decoders.0, decoders.1] (names as in '
                           'model.named_modules()).')


def distill_layers(dfd: Mapping[str, Any], net: nn.Module, path: str = 'train.dfd_opt') -> list[str]:
    """The module names ``dfd_opt`` distils in ``net``: ``layer`` (else the arch's ``dfd_layer``, else basicsr's
    default, :func:`~qdr_plugin.archs.basicsr_defaults.default_dfd_layer`), then, with ``decoder_stages``,
    ``decoder_layers`` (else the arch's). Raises :class:`~qdr_plugin.option_rules.OptionsError` when there is none
    to take."""
    layer = dfd.get('layer') or getattr(net, 'dfd_layer', None) or default_dfd_layer(net)
    if layer is None:
        raise OptionsError(f'{path}.layer', f'is not set and {type(net).__name__} names no bottleneck (no dfd_layer, '
                           'not in qdr_plugin.archs.basicsr_defaults.DFD_LAYERS)', MISSING,
                           'Set layer: to the module whose output is the bottleneck, e.g. layer: body.8.')
    layers = [layer] if isinstance(layer, str) else list(layer)
    if dfd.get('decoder_stages'):
        decoder = dfd.get('decoder_layers') or getattr(net, 'decoder_layers', None)
        if not decoder:
            raise OptionsError(f'{path}.decoder_layers', f'decoder_stages is on, but {type(net).__name__} names no '
                               'decoder modules', MISSING, 'Set decoder_layers: [<module>, ...] (names as in '
                               'model.named_modules()), or decoder_stages: false.')
        layers += [d for d in decoder if d not in layers]
    return layers


def relational_layers(relational: Mapping[str, Any], dfd: Mapping[str, Any] | None, net: nn.Module,
                      path: str = 'train.relational_opt') -> list[str]:
    """The module names ``relational_opt`` distils: its ``layer``, else DFD's first layer (the bottleneck)."""
    layer = relational.get('layer')
    if layer is None:
        return distill_layers(dfd or {}, net, path)[:1]
    return [layer] if isinstance(layer, str) else list(layer)


def check_distill_layers(dfd: Mapping[str, Any], net: nn.Module, path: str = 'train.dfd_opt') -> None:
    """Every module :func:`distill_layers` names must be a module of ``net`` (as ``named_modules()`` names it)."""
    names = [name for name, _ in net.named_modules() if name]
    for name in distill_layers(dfd, net, path):
        if name not in names:
            decoder = name in _as_list(dfd.get('decoder_layers') or []) and name not in _as_list(dfd.get('layer') or [])
            key = 'decoder_layers' if decoder else 'layer'
            raise OptionsError(f'{path}.{key}', f'{type(net).__name__} has no module named {name!r}', name,
                               did_you_mean(name, names, 0.75) or 'Use a name from model.named_modules().')


def _as_list(value: Any) -> list:
    return [value] if isinstance(value, str) else list(value)
