"""``QuantConfig``: what to quantize and how, read from the ``quant:`` block of an options YAML."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

CALIBRATION_METHODS = ('max', 'percentile', 'mse')
WEIGHT_INIT_METHODS = ('max', 'mse')


@dataclass
class QuantConfig:
    """Fake-quantization settings.

    Attributes:
        weight_bits: bits of the weights (per output channel, symmetric, narrow range ``[-(2^(b-1)-1), 2^(b-1)-1]``).
        act_bits: bits of the activations (per tensor).
        act_symmetric: ``True``: signed ``[-2^(b-1), 2^(b-1)-1]`` with zero point 0 (TensorRT's only scheme);
            ``False``: unsigned ``[0, 2^b-1]`` with a learnable zero point.
        keep_fp32: ``fnmatch`` patterns of module names (as in ``model.named_modules()``) that stay FP32.
        calibration: how activation step sizes are initialised: ``max``, ``percentile`` or ``mse``.
        percentile: the percentile of ``|x|`` used by ``percentile`` calibration.
        calib_batches: how many batches calibration looks at.
        calib_size: side of the calibration crops (``gt_size`` of the training set while calibrating); ``None``
            keeps the training ``gt_size``. Small crops are mostly border: a zero-padded network's activations
            near a bright edge can be 5-10x its interior ones (DnCNN on Train400: up to 115 against a median of
            11), and on 40x40 crops they set the ranges; 128x128 crops calibrate on what whole test images look
            like.
        weight_init: how weight step sizes are initialised: ``max`` (``max|w_c| / q_max``) or ``mse``.
        learn_step: ``True`` makes the step sizes trainable (LSQ); ``False`` freezes them after calibration.
        fold_bn: fold every BatchNorm that directly follows a convolution into it before quantizing.
        unsigned_relu: with symmetric activations, a quantizer that only ever sees ``nn.ReLU`` / ``nn.ReLU6`` outputs
            uses the unsigned grid ``[0, 2^b - 1]`` with zero point 0 instead of ``[-2^(b-1), 2^(b-1) - 1]``: twice
            the resolution on non-negative data, and exactly ONNX Runtime's uint8 form (which folds the ReLU into
            the QLinearConv). TensorRT has int8 only, so such a network exports for ``--target onnxruntime`` only.
    """

    weight_bits: int = 8
    act_bits: int = 8
    act_symmetric: bool = True
    keep_fp32: list[str] = field(default_factory=list)
    calibration: str = 'percentile'
    percentile: float = 99.99
    calib_batches: int = 8
    calib_size: int | None = None
    weight_init: str = 'max'
    learn_step: bool = True
    fold_bn: bool = True
    unsigned_relu: bool = False

    def __post_init__(self) -> None:
        for name in ('weight_bits', 'act_bits'):
            bits = getattr(self, name)
            if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
                raise ValueError(f'quant.{name} must be an integer from 2 to 16, got {bits!r}.')
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f'quant.calibration must be one of {CALIBRATION_METHODS}, got {self.calibration!r}.')
        if self.weight_init not in WEIGHT_INIT_METHODS:
            raise ValueError(f'quant.weight_init must be one of {WEIGHT_INIT_METHODS}, got {self.weight_init!r}.')
        if not 50.0 < float(self.percentile) <= 100.0:
            raise ValueError(f'quant.percentile must be in (50, 100], got {self.percentile!r}.')
        if isinstance(self.calib_batches, bool) or not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise ValueError(f'quant.calib_batches must be a positive integer, got {self.calib_batches!r}.')
        if self.calib_size is not None and (
            isinstance(self.calib_size, bool) or not isinstance(self.calib_size, int) or self.calib_size < 1
        ):
            raise ValueError(f'quant.calib_size must be a positive integer (the crop side), got {self.calib_size!r}.')
        if isinstance(self.keep_fp32, str):
            self.keep_fp32 = [self.keep_fp32]
        if not all(isinstance(p, str) for p in self.keep_fp32):
            raise ValueError(f'quant.keep_fp32 must be a list of module-name patterns, got {self.keep_fp32!r}.')
        for name in ('act_symmetric', 'learn_step', 'fold_bn', 'unsigned_relu'):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f'quant.{name} must be true or false, got {getattr(self, name)!r}.')

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> QuantConfig:
        """Build from the ``quant:`` options block. ``bits: b`` sets both ``weight_bits`` and ``act_bits``.

        Unknown keys raise ``ValueError`` with the closest valid key.
        """
        options = dict(options or {})
        if 'bits' in options:
            bits = options.pop('bits')
            options.setdefault('weight_bits', bits)
            options.setdefault('act_bits', bits)
        valid = [f.name for f in fields(cls)]
        for key in options:
            if key not in valid:
                close = difflib.get_close_matches(key, valid + ['bits'], n=1)
                hint = f" Did you mean '{close[0]}'?" if close else f' Valid keys: bits, {", ".join(valid)}.'
                raise ValueError(f"Unknown key 'quant.{key}'.{hint}")
        return cls(**options)
