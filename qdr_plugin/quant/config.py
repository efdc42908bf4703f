"""``QuantConfig``: what to quantize and how, read from the ``quant:`` block of an options YAML, with its rules."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from qdr_plugin.option_rules import (
    OptionsError,
    check_keys,
    did_you_mean,
    join,
    need_bool,
    need_choice,
    need_int,
    need_number,
)

__all__ = ['CALIBRATION_METHODS', 'SCHEMES', 'WEIGHT_INIT_METHODS', 'QuantConfig', 'check_keep_fp32']

CALIBRATION_METHODS = ('max', 'percentile', 'mse')
SCHEMES = ('lsq', 'observer')
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
        keep_first_last: the first and the last convolution / linear layer of the data flow stay FP32 (the input
            and output layers, which see the image itself and set the output's precision); ``None`` (default):
            kept when weights or activations have fewer than 8 bits, quantized at 8 bits (``scheme: observer``:
            the first layer only). With activations below 8 bits the element-wise ops before the first and after
            the last of them (a global residual add) stay FP32 too (:attr:`float_end_ops`).
        scheme: ``lsq`` (default): learned step sizes (LSQ; LSQ+ zero points for asymmetric activations),
            per-channel weights. ``observer``: QATIE's scheme, nothing learned: per-tensor weight steps from the
            current ``max|W|``, asymmetric unsigned activations whose range is a moving average of the batches'
            min / max, the first layer and every concatenation kept FP32.
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
        integer_points: the quantization points an integer runtime needs: the rewrites registered with
            :func:`~qdr_plugin.quant.convert.register_point_rewrite` (basicsr's residual blocks as ``Add`` / ``Mul``
            points), and a quantizer on the output of every quantized convolution whose result reaches float work
            (a residual ``+``, a LeakyReLU / PReLU, a pixel shuffle, a gate, the network output;
            :mod:`qdr_plugin.quant.output_points`), so every convolution can run as an integer kernel. ``False``:
            inputs-only quantization, the form of checkpoints trained before these points existed. ``None``
            (default): on with 8-bit activations, off below (integer kernels are 8-bit, and the extra points would
            put gate and residual tensors on a coarser grid for nothing); see :attr:`integer_kernel_points`.
    """

    weight_bits: int = 8
    act_bits: int = 8
    act_symmetric: bool = True
    keep_fp32: list[str] = field(default_factory=list)
    keep_first_last: bool | None = None
    calibration: str = 'percentile'
    percentile: float = 99.99
    calib_batches: int = 8
    calib_size: int | None = None
    weight_init: str = 'max'
    learn_step: bool = True
    fold_bn: bool = True
    unsigned_relu: bool = False
    integer_points: bool | None = None
    scheme: str = 'lsq'

    def __post_init__(self) -> None:
        """Check every field with the rules of the ``quant:`` block (:meth:`check_options`); ``scheme: observer``
        sets asymmetric activations and fixed (observed) step sizes."""
        if isinstance(self.keep_fp32, str):
            self.keep_fp32 = [self.keep_fp32]
        if self.scheme == 'observer':
            self.act_symmetric, self.learn_step = False, False
        self.check_options({f.name: getattr(self, f.name) for f in fields(self)})

    @property
    def observes(self) -> bool:
        """``scheme: observer``: ranges observed during training, not learned."""
        return self.scheme == 'observer'

    @property
    def float_ends(self) -> tuple[str, ...]:
        """Which ends of the data flow stay FP32: ``('first', 'last')``, ``('first',)`` or ``()`` (see
        ``keep_first_last``)."""
        if self.keep_first_last is False:
            return ()
        if self.keep_first_last or min(self.weight_bits, self.act_bits) < 8:
            return ('first', 'last')
        return ('first',) if self.observes else ()

    @property
    def integer_kernel_points(self) -> bool:
        """Whether :func:`~qdr_plugin.quant.convert.quantize_model` adds the integer-kernel points
        (``integer_points``; ``None``: with 8-bit activations)."""
        return self.act_bits >= 8 if self.integer_points is None else self.integer_points

    @property
    def float_end_ops(self) -> bool:
        """With activations below 8 bits, the element-wise ops outside the FP32 first / last layers stay FP32 too: a
        global residual ``x + f(x)`` quantized at 4 bits puts the input image and the output on a 16-level grid
        (1.3 dB of the EFM's 2 dB W4A4 loss on BSD68). At 8 bits they are as exact as the 8-bit image itself."""
        return self.act_bits < 8

    @classmethod
    def check_options(cls, options: Mapping[str, Any] | None, path: str = 'quant') -> dict[str, Any]:
        """The rules of the ``quant:`` block; returns the constructor's keyword arguments (``bits`` expanded).

        Keys are the fields plus ``bits`` (sets both ``weight_bits`` and ``act_bits`` unless they are given).
        A field given as ``~`` is refused, except ``calib_size`` (``~``: keep the training ``gt_size``) and
        ``keep_first_last`` (``~``: by the bit widths). Raises
        :class:`~qdr_plugin.option_rules.OptionsError` at ``<path>.<key>``.
        """
        if options is None:
            return {}
        if not isinstance(options, Mapping):
            raise OptionsError(path, 'must be a block of key: value pairs', options,
                               'Write quant: {bits: 8} or omit it.')
        kwargs = dict(options)
        check_keys(kwargs, path, ['bits', *_FIELD_RULES])
        if 'bits' in kwargs:
            _check_bits(kwargs, path, 'bits')
            bits = kwargs.pop('bits')
            kwargs.setdefault('weight_bits', bits)
            kwargs.setdefault('act_bits', bits)
        for key in kwargs:
            _FIELD_RULES[key](kwargs, path, key)
        if kwargs.get('scheme') == 'observer':
            for key in ('act_symmetric', 'learn_step', 'unsigned_relu'):
                if kwargs.get(key):
                    raise OptionsError(join(path, key), 'does not go with scheme: observer (unsigned asymmetric '
                                       'activations, ranges observed, not learned)', kwargs[key], f'Remove {key}.')
        return kwargs

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> QuantConfig:
        """Build from the ``quant:`` options block (:meth:`check_options` states its rules)."""
        return cls(**cls.check_options(options))


def check_keep_fp32(patterns: str | Iterable[str], layer_names: Iterable[str], path: str = 'quant') -> None:
    """Every ``keep_fp32`` pattern must match one of ``layer_names`` (the names of the layers ``quantize_model``
    would quantize): a pattern that matches none keeps nothing in float, silently. Raises
    :class:`~qdr_plugin.option_rules.OptionsError` at ``<path>.keep_fp32``."""
    names = list(layer_names)
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            close = did_you_mean(pattern, names)
            raise OptionsError(join(path, 'keep_fp32'), 'the pattern matches no quantizable layer', pattern,
                               f'{close or "Remove it."} (fnmatch patterns of layer names as in model.named_modules(), '
                               "e.g. 'head' or 'decoders.*'.)")


def _check_bits(block: Mapping[str, Any], path: str, key: str) -> None:
    need_int(block, path, key, 2, maximum=16, required=True, example='8')


def _check_patterns(block: Mapping[str, Any], path: str, key: str) -> None:
    value = block.get(key)
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise OptionsError(join(path, key), 'must be a list of module-name patterns', value,
                           f"Write e.g. {key}: ['head', 'tail.*'] (fnmatch patterns of model.named_modules() names).")


def _check_flag(block: Mapping[str, Any], path: str, key: str) -> None:
    need_bool(block, path, key, required=True)


_FIELD_RULES: dict[str, Callable[[Mapping[str, Any], str, str], Any]] = {
    'weight_bits': _check_bits,
    'act_bits': _check_bits,
    'act_symmetric': _check_flag,
    'keep_fp32': _check_patterns,
    'keep_first_last': lambda block, path, key: need_bool(block, path, key),
    'calibration': lambda block, path, key: need_choice(block, path, key, CALIBRATION_METHODS, required=True),
    'percentile': lambda block, path, key: need_number(block, path, key, minimum=50, above=True, maximum=100,
                                                       required=True, example='99.99'),
    'calib_batches': lambda block, path, key: need_int(block, path, key, 1, required=True, example='8'),
    'calib_size': lambda block, path, key: need_int(block, path, key, 1, example='128'),
    'weight_init': lambda block, path, key: need_choice(block, path, key, WEIGHT_INIT_METHODS, required=True),
    'learn_step': _check_flag,
    'fold_bn': _check_flag,
    'unsigned_relu': _check_flag,
    'integer_points': lambda block, path, key: need_bool(block, path, key),
    'scheme': lambda block, path, key: need_choice(block, path, key, SCHEMES, required=True),
}
"""The rule of each field: ``rule(block, path, key)`` raises :class:`OptionsError` at ``<path>.<key>``."""
