"""Checks that build the network once on the ``meta`` device: ``train.dfd_opt``'s DFD layers, ``quant.keep_fp32``
patterns, the training memory estimate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.archs.basicsr_defaults import network_input_channels
from qdr_plugin.models.curriculum import Curriculum
from qdr_plugin.models.qdr_model import QDRModel
from qdr_plugin.models.train_options import check_distill_layers, relational_layers
from qdr_plugin.option_rules import OptionsError, did_you_mean, is_int, lookup
from qdr_plugin.quant.config import check_keep_fp32
from qdr_plugin.quant.convert import REWRITES
from qdr_plugin.quant.modules import FLOAT_TO_QUANT
from qdr_plugin.quant.sharing import example_input as first_layer_example
from qdr_plugin.utils.complexity import available_memory, estimate_training_memory

_GIB = 2**30


def is_qdr(model: Any) -> bool:
    return isinstance(model, type) and issubclass(model, QDRModel)


def _build_on_meta(arch: Any, kwargs: Mapping) -> nn.Module:
    """The network of ``network_g`` on the ``meta`` device (shapes only). An arch whose constructor computes on its
    tensors (``.item()``, ``set_data``: SwinIR, RIDNet) cannot be built there: it is built on the CPU and moved."""
    try:
        with torch.device('meta'):
            return arch(**kwargs)
    except OptionsError:
        raise
    except Exception:  # noqa: BLE001  (any failure on meta: try the ordinary build below, which reports it)
        pass
    try:
        return arch(**kwargs).to('meta')
    except OptionsError:
        raise
    except Exception as error:  # noqa: BLE001  (the arch refuses its arguments, in its own words)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OptionsError('network_g', f'{arch.__name__} cannot be built from these arguments: {first}',
                           dict(kwargs), 'Fix the network_g values the message names.') from None


def _quantizable_layers(net: nn.Module) -> list[str]:
    """The names of the layers ``quantize_model`` quantizes (its rewrites applied to the ``meta`` ``net``, in
    place)."""
    with torch.device('meta'):  # a rewrite's new tensors where the network's are
        for rewrite in REWRITES.values():
            rewrite(net)
    return [name for name, module in net.named_modules() if type(module) in FLOAT_TO_QUANT]


def check_network_built(opt: Mapping, is_train: bool, model: Any) -> None:
    """The rules that need the network itself, built once on the ``meta`` device: ``train.dfd_opt``'s and
    ``train.relational_opt``'s layers, ``train.curriculum``'s stages,
    the memory of a training step (unless ``train.memory_check: false``), ``quant.keep_fp32``'s patterns."""
    kwargs = {k: v for k, v in opt['network_g'].items() if k != 'type'}
    net = _build_on_meta(lookup(ARCH_REGISTRY, opt['network_g']['type']), kwargs)
    train = opt.get('train') or {}
    if is_train and is_qdr(model) and train.get('dfd_opt'):
        check_distill_layers(train['dfd_opt'], net)
    if is_train and is_qdr(model) and train.get('relational_opt'):
        _check_relational_layers(train, net)
    if is_train and is_qdr(model) and train.get('curriculum'):
        Curriculum(train['curriculum'], net)
    if is_train and train.get('memory_check', True) is not False:
        _check_memory(opt, net, qat=is_qdr(model))
    keep_fp32 = (opt.get('quant') or {}).get('keep_fp32')
    if is_qdr(model) and keep_fp32:
        check_keep_fp32(keep_fp32, _quantizable_layers(net))


def _check_relational_layers(train: Mapping, net: nn.Module) -> None:
    names = [name for name, _ in net.named_modules() if name]
    for name in relational_layers(train['relational_opt'], train.get('dfd_opt'), net):
        if name not in names:
            raise OptionsError('train.relational_opt.layer', f'{type(net).__name__} has no module named {name!r}',
                               name, did_you_mean(name, names, 0.75) or 'Use a name from model.named_modules().')


def _training_batch(opt: Mapping, net: nn.Module) -> torch.Tensor | None:
    """A ``meta`` batch shaped like the network's training input: ``batch_size_per_gpu`` crops of side
    ``gt_size / scale``; ``None`` when the options do not tell it."""
    dataset = opt['datasets'].get('train') or {}
    batch, gt_size, scale = dataset.get('batch_size_per_gpu'), dataset.get('gt_size'), opt.get('scale') or 1
    channels = network_input_channels(opt['network_g'])
    if channels is None:
        guess = first_layer_example(net)
        channels = None if guess is None else guess.shape[1]
    if not (is_int(batch) and is_int(gt_size) and is_int(scale) and channels):
        return None
    size = max(gt_size // scale, 1)
    return torch.zeros(batch, channels, size, size, device='meta')


def _check_memory(opt: Mapping, net: nn.Module, qat: bool) -> None:
    """Refuse a training run whose estimated memory (:func:`estimate_training_memory`) exceeds the memory available
    now: it would end in the kernel's OOM killer, without a message."""
    batch = _training_batch(opt, net)
    if batch is None:
        return
    try:
        estimate = estimate_training_memory(net, batch, qat, (opt.get('quant') or {}).get('fold_bn', True))
    except Exception:  # noqa: BLE001  (an op without a meta kernel: no estimate rather than a false refusal)
        return
    available = available_memory()
    if available is None or estimate.total <= available:
        return
    params = estimate.parameters
    count = f'{params / 1e9:.2f} G' if params >= 1e9 else f'{params / 1e6:.2f} M'
    shape = ' x '.join(map(str, batch.shape))
    problem = (f'training needs about {estimate.total / _GIB:.1f} GiB of memory ({type(net).__name__}, {count} '
               f'parameters, {"QAT" if qat else "FP32"} batch {shape}), only {available / _GIB:.1f} GiB are '
               'available')
    fix = ('Make the network smaller (network_g depth / width), or lower datasets.train.gt_size or '
           'batch_size_per_gpu; if the estimate is wrong for this network, set train.memory_check: false.')
    if 4 * sum(p.numel() * p.element_size() for p in net.parameters()) > estimate.total / 2:
        raise OptionsError('network_g', problem, dict(opt['network_g']), fix)
    raise OptionsError('datasets.train.gt_size', problem, opt['datasets']['train']['gt_size'], fix)
