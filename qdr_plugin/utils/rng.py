"""The global random number generators' states: read, restore, and keep across a block.

A training state holds them (:class:`qdr_plugin.models.QDRModel` saves them, :mod:`qdr_plugin.train` restores them
on resume), and code that draws random numbers without being part of the training's random stream (validation, a
seeded calibration sample) runs inside :func:`rng_preserved`.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ['rng_preserved', 'rng_state', 'set_rng_state']


def rng_state() -> dict[str, Any]:
    """The python ``random``, numpy, torch CPU (and CUDA, if available) RNG states, as types that
    ``torch.load(..., weights_only=True)`` accepts (no numpy objects)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': [str(kind), keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only when CUDA is available with as many devices)."""
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state['torch'].cpu())
    cuda = state.get('cuda')
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Inside the block the global RNGs may be drawn from or reseeded; on leaving it (also on an exception) they are
    back in the states they had on entering."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)
