"""Synthetic haze on clean images by the atmospheric scattering model (dehazing training pairs).

Model (Koschmieder; RESIDE's ITS / SOTS were made with it from measured depth)::

    I = J t + A (1 - t),    t = exp(-beta d)

``J`` the clean image, ``A`` the airlight (gray, ``U(0.7, 1.0)`` as in RESIDE), ``beta`` the scattering
coefficient (``U(0.6, 1.8)`` as in RESIDE's ITS), ``d`` the relative depth in ``[d_near, 1]``.

Depth without a depth sensor: ``d`` is a random smooth field, not an estimate from the image. It is a plane whose
depth grows toward a random direction near the top of the frame (the far wall or horizon of most photos is higher
in the frame than the floor at the camera), plus a low-frequency random surface (Gaussian values on a 4 x 4 grid,
bicubic-upsampled), mixed with a random weight and rescaled to ``[d_near, 1]``. A monocular depth estimate would
need a network (none is available offline) and would make the haze follow what that network believes; the random
field keeps the transmission smooth and varied, so the restorer must read the haze from the image (contrast, the
veil's colour) rather than from scene semantics. The haze is therefore uncorrelated with object edges, where real
haze steps in depth; that is the price of this choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from basicsr.utils.registry import DATASET_REGISTRY

from qdr_plugin.option_rules import need_range
from qdr_plugin.registry import register

from .synthetic_pair_dataset import SyntheticPairDataset

__all__ = ['HAZE_DEFAULTS', 'SyntheticHazeDataset', 'add_haze', 'random_depth']

HAZE_DEFAULTS = {
    'beta': (0.6, 1.8),
    'airlight': (0.7, 1.0),
    'depth_near': (0.1, 0.5),
}
"""Default ``[lo, hi]`` ranges, drawn uniformly per image: RESIDE's ``beta`` and ``A``; ``depth_near`` is the
smallest depth of the field (its largest is 1)."""

_GRID = 4  # side of the random grid of the low-frequency depth surface


def random_depth(height: int, width: int, rng: np.random.Generator, near: float) -> np.ndarray:
    """A smooth random relative depth map in ``[near, 1]`` (module docstring), float32 ``height x width``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(-np.pi / 3, np.pi / 3)  # direction of increasing depth, from straight up
    plane = np.sin(angle) * xs / width - np.cos(angle) * ys / height
    surface = cv2.resize(rng.normal(size=(_GRID, _GRID)).astype(np.float32), (width, height),
                         interpolation=cv2.INTER_CUBIC)
    mix = rng.uniform(0.2, 0.8)
    depth = (1 - mix) * _unit(plane) + mix * _unit(surface)
    return (near + (1 - near) * _unit(depth)).astype(np.float32)


def _unit(field: np.ndarray) -> np.ndarray:
    """``field`` rescaled to [0, 1] (a constant field becomes 0)."""
    span = float(field.max() - field.min())
    return (field - field.min()) / span if span > 0 else np.zeros_like(field)


def add_haze(clean: np.ndarray, rng: np.random.Generator, beta: tuple[float, float],
             airlight: tuple[float, float], depth_near: tuple[float, float]) -> np.ndarray:
    """``I = J t + A (1 - t)``, ``t = exp(-beta d)`` (module docstring), parameters drawn from the ranges.

    Args:
        clean: Float32 ``H x W x C`` image in [0, 1].
        rng: The generator every random draw comes from.
        beta, airlight, depth_near: ``[lo, hi]`` ranges of ``beta``, ``A`` and the depth field's near end.

    Returns:
        The hazy image, float32, same shape, in [0, 1].
    """
    h, w = clean.shape[:2]
    depth = random_depth(h, w, rng, rng.uniform(*depth_near))
    t = np.exp(-rng.uniform(*beta) * depth)[..., None]
    return (clean * t + rng.uniform(*airlight) * (1 - t)).astype(np.float32)


@register(DATASET_REGISTRY)
class SyntheticHazeDataset(SyntheticPairDataset):
    """Clean images with synthetic haze as ``lq`` (:func:`add_haze`); see :class:`SyntheticPairDataset` for the
    shared options and the seeding.

    Degradation options (each ``[lo, hi]``, defaults in :data:`HAZE_DEFAULTS`): ``beta`` (>= 0, <= 10),
    ``airlight`` (in [0, 1]), ``depth_near`` (in [0, 1]).
    """

    PARAMETER_KEYS = tuple(HAZE_DEFAULTS)

    @classmethod
    def check_parameters(cls, opt: Mapping[str, Any], path: str) -> dict[str, Any]:
        maxima = {'beta': 10.0, 'airlight': 1.0, 'depth_near': 1.0}
        return {key: need_range(opt, path, key, default, maximum=maxima[key], example=str(list(default)))
                for key, default in HAZE_DEFAULTS.items()}

    degrade = staticmethod(add_haze)
