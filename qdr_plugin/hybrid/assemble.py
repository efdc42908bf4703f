"""Assemble a hybrid from a teacher and its surrogates: modules swapped by name, state dicts merged key for key.

Plain PyTorch: a block is any named sub-module of a container (``latent.3`` is child ``3`` of ``latent``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from qdr_plugin.errors import UserError


def _parent(net: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition('.')
    return (net.get_submodule(parent_name) if parent_name else net), child


@contextmanager
def swapped(net: nn.Module, replacements: Mapping[str, nn.Module]) -> Iterator[nn.Module]:
    """Within the context, ``net`` runs with each named block replaced (in place, no copy); restored after."""
    originals = {}
    try:
        for name, module in replacements.items():
            parent, child = _parent(net, name)
            originals[name] = parent.get_submodule(child)
            setattr(parent, child, module)
        yield net
    finally:
        for name, module in originals.items():
            parent, child = _parent(net, name)
            setattr(parent, child, module)


def hybrid_state_dict(teacher_state: Mapping[str, torch.Tensor], surrogate_state: Mapping[str, torch.Tensor],
                      chosen: Iterable[str]) -> dict[str, torch.Tensor]:
    """The state dict of the hybrid that replaces the ``chosen`` blocks: the teacher's keys outside them, the
    surrogates' keys (``<block>.<key>``, as :meth:`SurrogateDistiller.state_dict` writes them) inside them."""
    prefixes = tuple(f'{name}.' for name in chosen)
    state = {k: v for k, v in teacher_state.items() if not k.startswith(prefixes)}
    missing = [p[:-1] for p in prefixes if not any(k.startswith(p) for k in surrogate_state)]
    if missing:
        raise UserError(f'the surrogate weights hold no block {missing[0]!r}: distil it first '
                        '(basicsr hybrid distill).')
    state.update({k: v for k, v in surrogate_state.items() if k.startswith(prefixes)})
    return state
