"""The quantization engine: plain PyTorch, no basicsr.

    model = quantize_model(model, QuantConfig(weight_bits=8, act_bits=8))
    calibrate(model, batches)          # initial activation step sizes
    ... train: LSQ step sizes and weights learn together ...
"""

from .bn_fold import fold_batchnorm, fold_conv_bn
from .calibration import calibrate
from .call_sites import CallSiteActQuantizer
from .config import QuantConfig
from .convert import (
    is_quantized,
    is_quantized_state_dict,
    project_step_sizes,
    quantize_model,
    quantizer_parameters,
    quantizers,
    set_quant_enabled,
)
from .fake_quant import ActQuantizer, FakeQuantizer, WeightQuantizer, lsq_fake_quant
from .modules import QuantAdd, QuantConcat, QuantConv2d, QuantConvTranspose2d, QuantLinear, QuantMul, QuantSub
from .ops import Add, Concat, Mul, Sub
from .sharing import tie_shared_quantizers

__all__ = [
    'ActQuantizer', 'Add', 'CallSiteActQuantizer', 'Concat', 'FakeQuantizer', 'Mul', 'QuantAdd', 'QuantConcat',
    'QuantConfig', 'QuantConv2d', 'QuantConvTranspose2d', 'QuantLinear', 'QuantMul', 'QuantSub', 'Sub',
    'WeightQuantizer', 'calibrate', 'fold_batchnorm', 'fold_conv_bn', 'is_quantized', 'is_quantized_state_dict',
    'lsq_fake_quant', 'project_step_sizes', 'quantize_model', 'quantizer_parameters', 'quantizers',
    'set_quant_enabled', 'tie_shared_quantizers',
]
