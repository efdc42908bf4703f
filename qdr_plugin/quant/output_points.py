"""Output quantizers on the convolutions whose result reaches float work: where an integer runtime needs them.

An INT8 runtime runs a convolution as an integer kernel only when its input is dequantized and its output is
quantized again: ONNX Runtime fuses ``DequantizeLinear -> Conv -> QuantizeLinear`` (optionally with a Relu before
the QuantizeLinear) into one ``QLinearConv``. The plugin quantizes inputs: a convolution's output is quantized only
where a quantized layer or op reads it. A convolution whose result goes to a residual ``+``, a ``* res_scale``, a
LeakyReLU / PReLU, a pixel shuffle, a sigmoid gate or the network output therefore runs in float.

:func:`add_output_quantizers` finds those convolutions on one forward pass of an example input and gives each an
activation quantizer on its output (``QuantConv2d.out_quant``; trained like every other quantizer). Every consumer
then reads the quantized tensor, and a consumer's own input quantizer that sees it is tied to the output quantizer
by :func:`qdr_plugin.quant.tie_shared_quantizers` (one quantizer per tensor): the deployed graph has one
QuantizeLinear after the convolution, and the float work after it runs on the dequantized tensor, or as an integer
op where the runtime has one (``QLinearAdd``, ``QLinearLeakyRelu``, ``QLinearSigmoid``, ...).

How the consumers are seen: a :class:`~torch.overrides.TorchFunctionMode` records every torch function a
convolution's output (or the output of an ``nn.ReLU`` / ``nn.ReLU6`` module that alone reads it, which the runtime
folds) is passed to, outside the activation quantizers; the network's returned tensor counts as a consumer too.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from .config import QuantConfig
from .fake_quant import ActQuantizer
from .modules import QuantConv2d, act_quantizer
from .sharing import RELU_TYPES, forward_once


def _tensors(values: Iterable) -> Iterable[torch.Tensor]:
    """The tensors among ``values`` and inside its lists / tuples."""
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from _tensors(value)


class _ConsumerRecorder(TorchFunctionMode):
    """Records which convolution outputs a torch function outside the quantizers and ReLU modules reads (none is
    recorded while ``paused``).

    ``tracked`` maps ``id(tensor)`` to the name of the convolution whose output it is (or a ReLU module's output of
    it); the tensors themselves are held in ``alive`` for the pass, so ids stay unique.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tracked: dict[int, str] = {}
        self.alive: list[torch.Tensor] = []
        self.float_fed: set[str] = set()
        self.paused = 0

    def track(self, tensor: torch.Tensor, name: str) -> None:
        self.tracked[id(tensor)] = name
        self.alive.append(tensor)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if not self.paused and isinstance(result, (torch.Tensor, tuple, list)):
            for tensor in _tensors([*args, *(kwargs or {}).values()]):
                name = self.tracked.get(id(tensor))
                if name is not None:
                    self.float_fed.add(name)
        return result

    def observe(self, x: torch.Tensor, quantizer: ActQuantizer) -> torch.Tensor:
        """The quantizers' observer interface: a quantizer reading a tensor is the consumer an integer kernel
        needs, so nothing is recorded; its output is a new view, so what reads the quantized tensor is not taken
        for a reader of ``x``."""
        self.paused += 1
        try:
            return x.view_as(x)
        finally:
            self.paused -= 1


def float_fed_convolutions(model: nn.Module, example: torch.Tensor, skip: Iterable[str] = ()) -> list[str]:
    """Names of the :class:`QuantConv2d` layers (not in ``skip``) whose output some operation other than an
    activation quantizer reads on a forward pass of ``model`` on ``example`` (in eval mode), directly or through a
    ReLU module, or that the network returns. Quantizers pass their input through during the pass."""
    convs = {module: name for name, module in model.named_modules() if isinstance(module, QuantConv2d)}
    skipped = set(skip)
    recorder = _ConsumerRecorder()
    act_quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer)]

    def conv_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if convs[module] not in skipped:
            recorder.track(output, convs[module])

    def relu_pre_hook(module: nn.Module, inputs: tuple) -> None:
        recorder.paused += 1

    def relu_hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        recorder.paused -= 1
        name = recorder.tracked.get(id(inputs[0]))
        if name is not None and output is not inputs[0]:
            recorder.track(output, name)

    hooks: list[RemovableHandle] = [m.register_forward_hook(conv_hook) for m in convs]
    for module in model.modules():
        if isinstance(module, RELU_TYPES):
            hooks += [module.register_forward_pre_hook(relu_pre_hook), module.register_forward_hook(relu_hook)]
    hooks.append(model.register_forward_hook(
        lambda module, inputs, output: [recorder.float_fed.add(recorder.tracked[id(t)])
                                        for t in _tensors([output]) if id(t) in recorder.tracked]))
    for q in act_quantizers:
        q.observer = recorder
    try:
        with torch.no_grad(), recorder:
            forward_once(model, example, hooks)
    finally:
        for q in act_quantizers:
            q.observer = None
    return [name for name in convs.values() if name in recorder.float_fed]


def add_output_quantizers(
    model: nn.Module, config: QuantConfig, example: torch.Tensor, skip: Iterable[str] = ()
) -> list[str]:
    """Give every :class:`QuantConv2d` of :func:`float_fed_convolutions` an output quantizer (``out_quant``, a new
    :class:`ActQuantizer` of ``config``); returns their names. Tie them to their consumers' quantizers afterwards
    (:func:`qdr_plugin.quant.tie_shared_quantizers`), and calibrate them like the others."""
    names = float_fed_convolutions(model, example, skip)
    modules = dict(model.named_modules())
    for name in names:
        modules[name].out_quant = act_quantizer(config)
    return names
