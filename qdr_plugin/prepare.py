"""One entry that turns a float network of an options file into a fake-quantized one: :func:`prepare`.

    prepared = prepare(net, opt['network_g'], QuantConfig.from_options(opt.get('quant')), batches)
    int8 = prepared.network

QAT (``QDRModel``), checkpoint loading (``basicsr export`` / ``ptq`` / ``bench`` / ``infer``, through
:func:`qdr_plugin.utils.checkpoint.load_networks`), the per-layer sensitivity and the benchmark scripts all quantize
through it, so the steps, their order and the calibration settings are the same everywhere:

1. BatchNorm folded into the convolutions before it (``quant.fold_bn``);
2. with ``keep_float``, a copy of that float network taken (QAT's frozen FP32 teacher);
3. :func:`qdr_plugin.quant.quantize_model`: the registered rewrites (ECBSR's re-parameterization), fake quantizers,
   and the quantizers that see one tensor tied on one forward pass of an arch-aware example input
   (:func:`qdr_plugin.archs.basicsr_defaults.example_input`: the options' input channels, e.g. the 3 of an RRDBNet
   whose first convolution sees 12 or 48 after its pixel-unshuffle);
4. with calibration batches, the activation step sizes calibrated on them with ``quant.calibration`` and
   ``quant.percentile`` (:func:`qdr_plugin.quant.calibrate`).

The engine (:mod:`qdr_plugin.quant`) stays plain PyTorch; this module adds what only the options know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qdr_plugin.archs.basicsr_defaults import example_input
from qdr_plugin.quant import QuantConfig, calibrate, fold_batchnorm, quantize_model

__all__ = ['PreparedNetwork', 'prepare']


@dataclass
class PreparedNetwork:
    """What :func:`prepare` made.

    Attributes:
        network: the fake-quantized network: the one given to :func:`prepare`, changed in place.
        float_network: with ``keep_float``, the float network as it was just before quantization (BatchNorm folded,
            no rewrite applied), a separate copy; else ``None``.
        calibrated: how many activation quantizers were calibrated (0 without calibration batches).
    """

    network: nn.Module
    float_network: nn.Module | None
    calibrated: int


def prepare(
    net: nn.Module,
    network_opt: Mapping[str, Any],
    config: QuantConfig,
    calibration_batches: Iterable[torch.Tensor] | None = None,
    keep_float: bool = False,
) -> PreparedNetwork:
    """Fold BatchNorm, quantize ``net`` in place with ``config``, tie its shared quantizers on an example input
    shaped after ``network_opt`` (the options' ``network_g``), and calibrate it on ``calibration_batches`` (network
    inputs) when given.

    ``calibration_batches`` is drawn in full (``list``) after quantization, then calibrated on: a lazy iterable
    (e.g. :func:`qdr_plugin.data.calibration.training_calibration_batches`) makes its random draws after those of
    quantization and before those of calibration. Without it the activation step sizes are left uninitialised (a
    checkpoint's state dict gives them). ``keep_float``: also return a copy of the BatchNorm-folded float network
    (see :class:`PreparedNetwork`).

    Raises ``ValueError`` as :func:`qdr_plugin.quant.quantize_model` does (nothing to quantize, a BatchNorm that
    cannot be folded, a network that does not run on the example input).
    """
    float_network = None
    if keep_float:
        if config.fold_bn:
            fold_batchnorm(net)
        float_network = deepcopy(net)
    quantize_model(net, config, example_input(net, network_opt))
    calibrated = 0
    if calibration_batches is not None:
        calibrated = calibrate(net, list(calibration_batches), config.calibration, config.percentile)
    return PreparedNetwork(net, float_network, calibrated)
