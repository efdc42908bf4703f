"""QDR on BasicSR's own archs: default DFD layers, example inputs, and ECBSR's re-parameterization.

A BasicSR user switches ``model_type`` to ``QDRModel`` and keeps their ``network_g``. Three things are arch-specific:

**Where DFD distils** (:data:`DFD_LAYERS`, :func:`default_dfd_layer`). ``QDRModel`` takes ``train.dfd_opt.layer``
when given, else the arch's own ``dfd_layer`` attribute (EFM, DnCNN), else this table, keyed by the arch's class
name. Each default is the deepest feature before the up-sampling / reconstruction head:

============================ ============================= ======================================================
arch                         default layer                 the feature DFD compares
============================ ============================= ======================================================
``SwinIR``                   ``conv_after_body``           the conv after the RSTBs (before ``+ conv_first``)
``RCAN``, ``EDSR``           ``conv_after_body``           the conv after the trunk; the arch adds the shallow
                                                           feature to it *in place* (``res += x``), so the
                                                           captured tensor is the sum, the up-sampler's input
``RIDNet``                   ``body``                      the last EAM's output (the tail conv's input)
``MSRResNet``                ``body``                      the residual trunk's output (before ``upconv1``)
``RRDBNet``                  ``conv_body``                 the conv after the RRDB trunk (before ``+ feat``)
``SRVGGNetCompact``          ``body.<2 num_conv + 1>``     the activation after the last hidden conv
``ECBSR``                    ``backbone.<num_block>``      the last ECB with ``num_channel`` outputs
============================ ============================= ======================================================

**An example input** (:func:`example_input`) for :func:`qdr_plugin.quant.quantize_model`'s one forward pass that
ties the quantizers sharing a tensor: the channel count comes from the options (``in_ch`` / ``num_in_ch`` /
``in_chans`` / ``in_channels``; RRDBNet's first conv sees 4x or 16x that after its pixel-unshuffle), the size is
64 rounded up to a multiple of every window size, and not SwinIR's ``img_size`` (:func:`example_size`; also the
size :func:`qdr_plugin.deploy.export_onnx` traces at).

**ECBSR** (:func:`reparameterize_ecb`). basicsr's ``ECB`` computes its convolutions functionally: in training mode
a 3x3 conv plus four ``SeqConv3x3`` branches that call ``F.conv2d`` on weights they compute, in eval mode one
``F.conv2d`` with the merged weight of ``rep_params()``. Neither has a conv module to quantize (only the 3x3
branch's ``conv3x3`` is one, and eval mode never calls it). :func:`qdr_plugin.quant.quantize_model` therefore
first replaces every ``ECB`` by :class:`ReparameterizedECB` -- the ``nn.Conv2d`` with the merged weight and bias,
then the ECB's activation, the same function as the ECB in eval mode -- and quantizes that (ECBSR's own deploy form).
The FP32 warm-up trains the multi-branch ECBs; QAT trains the plain convs; the teacher stays an ECBSR.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from basicsr.archs.ecbsr_arch import ECB
from torch import nn

from qdr_plugin.quant.convert import register_rewrite
from qdr_plugin.quant.sharing import example_input as first_layer_example

DFD_LAYERS: dict[str, str | Callable[[nn.Module], str]] = {
    'SwinIR': 'conv_after_body',
    'RCAN': 'conv_after_body',
    'EDSR': 'conv_after_body',
    'RIDNet': 'body',
    'MSRResNet': 'body',
    'RRDBNet': 'conv_body',
    'SRVGGNetCompact': lambda net: f'body.{len(net.body) - 2}',
    'ECBSR': lambda net: f'backbone.{len(net.backbone) - 2}',
}
"""Default DFD layer of basicsr's archs by class name: a module name, or a function of the network giving one."""

INPUT_CHANNEL_KEYS = ('in_ch', 'num_in_ch', 'in_chans', 'in_channels', 'inp_channels')
"""The ``network_g`` keys under which archs take their input channel count (ours, most of basicsr's, SwinIR,
RIDNet, Restormer)."""

EXAMPLE_SIZE = 64


def default_dfd_layer(net: nn.Module) -> str | None:
    """The default DFD layer of a basicsr arch (:data:`DFD_LAYERS`; also for its form with quantization points, a
    subclass), ``None`` for an arch not in the table."""
    layer = next((DFD_LAYERS[cls.__name__] for cls in type(net).__mro__ if cls.__name__ in DFD_LAYERS), None)
    return layer(net) if callable(layer) else layer


def network_input_channels(network_opt: Mapping[str, Any]) -> int | None:
    """The input channel count given in a ``network_g`` block, ``None`` when it names none."""
    for key in INPUT_CHANNEL_KEYS:
        if network_opt.get(key) is not None:
            return int(network_opt[key])
    return None


def example_size(net: nn.Module) -> int:
    """Height and width of an example input: 64 rounded up to a multiple of every ``window_size`` in ``net``, and
    not the ``input_resolution`` a block was built for.

    The latter matters for tracing (ONNX export): a SwinIR block fed its build-time resolution uses the attention
    mask it stored for that size, any other size computes the mask from the input's shape, and only that path
    gives a graph that runs at every size.
    """
    windows = {m.window_size for m in net.modules() if isinstance(getattr(m, 'window_size', None), int)}
    built_for = {tuple(m.input_resolution) for m in net.modules() if getattr(m, 'input_resolution', None)}
    multiple = math.lcm(1, *windows)
    size = multiple * math.ceil(EXAMPLE_SIZE / multiple)
    while (size, size) in built_for:
        size += multiple
    return size


def example_input(net: nn.Module, network_opt: Mapping[str, Any]) -> torch.Tensor | None:
    """A zero image batch ``1 x C x S x S`` that ``net`` accepts: ``C`` from ``network_opt``
    (:func:`network_input_channels`), else from ``net``'s first layer; ``S`` from :func:`example_size`.
    ``None`` when the channel count cannot be told."""
    channels = network_input_channels(network_opt)
    if channels is None:
        guess = first_layer_example(net)
        if guess is None:
            return None
        channels = guess.shape[1]
    param = next(net.parameters(), None)
    size = example_size(net)
    return torch.zeros(1, channels, size, size, device=None if param is None else param.device)


class ReparameterizedECB(nn.Module):
    """An ECB in its deploy form: ``act(conv3x3(x))`` with the merged weight and bias of ``ECB.rep_params()``."""

    def __init__(self, ecb: ECB):
        super().__init__()
        weight, bias = ecb.rep_params()
        self.conv = nn.Conv2d(ecb.in_channels, ecb.out_channels, 3, padding=1, device=weight.device)
        with torch.no_grad():
            self.conv.weight.copy_(weight)
            self.conv.bias.copy_(bias)
        self.act = nn.Identity() if ecb.act_type == 'linear' else ecb.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


@register_rewrite
def reparameterize_ecb(model: nn.Module) -> int:
    """Replace every basicsr ``ECB`` in ``model`` by its :class:`ReparameterizedECB` (in place; module names stay);
    returns how many."""
    slots = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, ECB)
    ]
    for parent, name, child in slots:
        setattr(parent, name, ReparameterizedECB(child))
    if slots:
        # basicsr's logger without get_root_logger(), which would set it up (without its log file) when the
        # pre-flight check rewrites a network before basicsr's training starts
        logging.getLogger('basicsr').info(
            f'quantize_model: {len(slots)} ECB blocks re-parameterized into plain 3x3 convolutions.')
    return len(slots)
