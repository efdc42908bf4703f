"""Per-layer quantization sensitivity: how much PSNR a network loses when only one layer is quantized.

A *layer* is a module that owns fake quantizers (a ``QuantConv2d`` with its ``act_quant`` and ``weight_quant``, a
``QuantAdd`` with ``quant_a`` / ``quant_b``, ...). For each layer, every other quantizer is switched off and the
network is scored on one benchmark set; the loss is ``PSNR_fp32 - PSNR_layer``, with ``PSNR_fp32`` the same
network with all quantizers off. A quantizer shared by several layers (one tensor, one quantizer: see
:func:`qdr_plugin.quant.tie_shared_quantizers`) is switched on with each layer that owns it. Layers that lose the
most are the candidates for ``quant.keep_fp32``.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from qdr_plugin.data.calibration import calibration_inputs
from qdr_plugin.deploy.infer import torch_restorer
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import FakeQuantizer, QuantConfig, quantizers

from .protocol import BenchSet
from .runner import score


def quantized_layers(net: nn.Module) -> list[tuple[str, nn.Module, list[FakeQuantizer]]]:
    """``(name, module, its quantizers)`` of every module that owns fake quantizers, in module order."""
    layers = []
    for name, module in net.named_modules():
        if isinstance(module, FakeQuantizer):
            continue
        owned = [child for child in module.children() if isinstance(child, FakeQuantizer)]
        if owned:
            layers.append((name, module, owned))
    return layers


@contextmanager
def only_quantizers(net: nn.Module, enabled: Sequence[FakeQuantizer]) -> Iterator[None]:
    """Inside the block only the quantizers in ``enabled`` are on; every quantizer's state is restored after."""
    saved = [(q, q.enabled) for _, q in quantizers(net)]
    keep = {id(q) for q in enabled}
    try:
        for q, _ in saved:
            q.enabled = id(q) in keep
        yield
    finally:
        for q, state in saved:
            q.enabled = state


def quantize_from_options(net: nn.Module, opt: Mapping[str, Any], calib_images: int) -> nn.Module:
    """A quantized copy of the FP32 ``net`` (:func:`qdr_plugin.prepare.prepare` with the options' ``network_g`` and
    ``quant`` block), its activation steps calibrated on ``calib_images`` noisy crops of ``datasets.train``
    (:func:`qdr_plugin.data.calibration.calibration_inputs`), of side ``quant.calib_size`` when the options set
    it."""
    train_opt = (opt.get('datasets') or {}).get('train')
    if not isinstance(train_opt, Mapping):
        raise ValueError('the options file has no datasets.train block: add the training set to calibrate the FP32 '
                         'checkpoint on, or give a quantized (QDR) checkpoint to --sensitivity.')
    config = QuantConfig.from_options(opt.get('quant'))
    batches = [torch.from_numpy(a) for a in calibration_inputs(train_opt, calib_images, config.calib_size)]
    return prepare(copy.deepcopy(net), opt['network_g'], config, batches).network.eval()


def layer_sensitivity(net: nn.Module, bench_set: BenchSet, name: str) -> dict[str, Any]:
    """Score the quantized ``net`` on ``bench_set`` in FP32 (all quantizers off), fully quantized, and with each
    layer alone quantized. Returns ``{'fp32_psnr', 'int8_psnr', 'layers': [...]}``, the layers sorted by
    ``loss_db`` (largest first), each ``{'layer', 'type', 'quantizers', 'psnr', 'delta_db', 'loss_db'}``."""
    layers = quantized_layers(net)
    if not layers:
        raise ValueError(f'model {name} has no quantized layer; give a QDR checkpoint or an FP32 one with a quant '
                         'block in the options.')
    restore = torch_restorer(net)
    all_quantizers = [q for _, q in quantizers(net)]
    with only_quantizers(net, []):
        fp32 = score(restore, bench_set, f'{name} fp32')['psnr']
    with only_quantizers(net, all_quantizers):
        int8 = score(restore, bench_set, f'{name} int8')['psnr']
    rows = []
    for layer, module, owned in tqdm(layers, desc='sensitivity', unit='layer', file=sys.stderr):
        with only_quantizers(net, owned):
            psnr = score(restore, bench_set, layer)['psnr']
        rows.append({'layer': layer, 'type': type(module).__name__, 'quantizers': len(owned),
                     'psnr': round(psnr, 4), 'delta_db': round(psnr - fp32, 4), 'loss_db': round(fp32 - psnr, 4)})
    rows.sort(key=lambda r: r['loss_db'], reverse=True)
    return {'fp32_psnr': round(fp32, 4), 'int8_psnr': round(int8, 4), 'layers': rows}


def suggest_keep_fp32(layers: Sequence[dict[str, Any]], threshold_db: float) -> list[str]:
    """The layers that lose at least ``threshold_db`` alone: patterns for ``quant.keep_fp32``."""
    return [row['layer'] for row in layers if row['loss_db'] >= threshold_db]
