r"""Surrogate distillation: every surrogate trained against its frozen teacher block on the teacher's own input.

For the blocks :math:`b_1 .. b_n` of a frozen teacher and their surrogates :math:`s_1 .. s_n`, one teacher forward
pass captures every block's input :math:`h_{i-1}` and output :math:`b_i(h_{i-1})` (forward hooks), and one
optimizer over all surrogates minimises

.. math::

    L = \frac{1}{n} \sum_{i=1}^{n} \frac{d\big(s_i(h_{i-1}),\, b_i(h_{i-1})\big)}{d\big(h_{i-1},\, b_i(h_{i-1})\big)}

with :math:`d` the mean squared (``mse``) or absolute (``l1``) difference. Each surrogate sees its teacher block's
input, never another surrogate's output, so the blocks train independently in one backward pass. The denominator
(``normalize=True``, detached) is the distance of the identity map: it puts blocks of different feature scales on
one footing, and a surrogate that starts as the identity (an :class:`~qdr_plugin.archs.ssm_arch.SSMBlock` does)
starts at a loss of 1 per block.

Plain PyTorch: blocks are named modules of any ``nn.Module``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

DISTANCES = {'mse': F.mse_loss, 'l1': F.l1_loss}
"""The block distances ``d``."""


@contextmanager
def block_io(net: nn.Module, names: Iterable[str]) -> Iterator[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Within the context, every forward pass of ``net`` stores ``{name: (input, output)}`` of the named blocks
    (single-tensor input and output, detached) in the yielded dict."""
    modules = dict(net.named_modules())
    captured: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):
        def store(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            captured[name] = (inputs[0].detach(), output.detach())
        return store

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def distillation_loss(surrogates: Mapping[str, nn.Module], pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                      distance: str = 'mse', normalize: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """``L`` of the module docstring over the blocks in ``surrogates``, and each block's term."""
    d = DISTANCES[distance]
    terms = {}
    for name, surrogate in surrogates.items():
        inp, target = pairs[name]
        term = d(surrogate(inp), target)
        if normalize:
            term = term / d(inp, target).clamp_min(1e-12)
        terms[name] = term
    total = torch.stack(list(terms.values())).mean()
    return total, {name: float(term.detach()) for name, term in terms.items()}


class SurrogateDistiller:
    """All surrogates of one frozen teacher, trained together with one Adam optimizer.

    Args:
        teacher: the network whose blocks are imitated (frozen, run in eval mode).
        surrogates: ``{block name: surrogate}``; each surrogate maps the block's input to its output's shape.
        lr: Adam's learning rate. distance: ``mse`` or ``l1``. normalize: divide each block's term by its identity
            distance (module docstring).
    """

    def __init__(self, teacher: nn.Module, surrogates: Mapping[str, nn.Module], lr: float = 1e-3,
                 distance: str = 'mse', normalize: bool = True):
        self.teacher = teacher.eval().requires_grad_(False)
        self.surrogates = dict(surrogates)
        self.distance, self.normalize = distance, normalize
        params = [p for s in self.surrogates.values() for p in s.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=lr)

    def block_pairs(self, images: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{block: (h_{i-1}, b_i(h_{i-1}))}`` from one teacher forward pass on ``images``."""
        with block_io(self.teacher, self.surrogates) as captured, torch.no_grad():
            self.teacher(images)
        return dict(captured)

    def step(self, images: torch.Tensor) -> dict[str, float]:
        """One optimizer step on a batch of network inputs; returns each block's loss term and ``total``."""
        pairs = self.block_pairs(images)
        for surrogate in self.surrogates.values():
            surrogate.train()
        total, terms = distillation_loss(self.surrogates, pairs, self.distance, self.normalize)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return {**terms, 'total': float(total.detach())}

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor) -> dict[str, float]:
        """Each block's loss term and ``total`` on ``images``, without a step."""
        pairs = self.block_pairs(images)
        for surrogate in self.surrogates.values():
            surrogate.eval()
        total, terms = distillation_loss(self.surrogates, pairs, self.distance, self.normalize)
        return {**terms, 'total': float(total)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The surrogates' weights under the replaced blocks' names (``latent.3.in_proj.weight``): the keys a
        hybrid network has for them."""
        return {f'{name}.{key}': value.detach().clone()
                for name, surrogate in self.surrogates.items() for key, value in surrogate.state_dict().items()}
