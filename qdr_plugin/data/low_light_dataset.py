"""Synthetic low light on clean images (low-light enhancement pairs), in the style of LOL-v2-synthetic.

Pipeline per image (sRGB ``J`` in [0, 1])::

    L = J ** gamma                                   inverse gamma: to linear light
    D = k * L                                        exposure: k log-uniform
    N = D + sqrt(s * D + r) * n,  n ~ N(0, 1)        shot (signal-dependent, s) and read (r) noise per pixel
    I = round(255 * clip(N, 0, 1) ** (1 / gamma)) / 255   back to 8-bit sRGB

The shot-noise variance ``s`` is log-uniform and the read-noise variance follows it as in camera noise models
(Brooks et al., "Unprocessing images", CVPR 2019): ``log r = 2.18 log s + 1.20 + N(0, 0.26)``. Rounding to 8 bits
matters: in the dark the codes left are few, as in a real dark 8-bit photo.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from basicsr.utils.registry import DATASET_REGISTRY

from qdr_plugin.option_rules import need_range
from qdr_plugin.registry import register

from .synthetic_pair_dataset import SyntheticPairDataset

__all__ = ['LOW_LIGHT_DEFAULTS', 'SyntheticLowLightDataset', 'darken']

LOW_LIGHT_DEFAULTS = {
    'gamma': (2.0, 2.6),
    'exposure': (0.01, 0.2),
    'shot_noise': (1e-4, 1e-2),
}
"""Default ``[lo, hi]`` ranges per image: ``gamma`` uniform, ``exposure`` (``k``) and ``shot_noise`` (``s``)
log-uniform."""

_READ_SLOPE, _READ_OFFSET, _READ_STD = 2.18, 1.20, 0.26


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def darken(clean: np.ndarray, rng: np.random.Generator, gamma: tuple[float, float],
           exposure: tuple[float, float], shot_noise: tuple[float, float]) -> np.ndarray:
    """The low-light pipeline of the module docstring, parameters drawn from the ranges.

    Args:
        clean: Float32 ``H x W x C`` sRGB image in [0, 1].
        rng: The generator every random draw comes from.
        gamma, exposure, shot_noise: ``[lo, hi]`` ranges of ``gamma``, ``k`` and ``s``.

    Returns:
        The dark, noisy 8-bit-valued image, float32, same shape, in [0, 1].
    """
    g = rng.uniform(*gamma)
    shot = _log_uniform(rng, shot_noise)
    read = float(np.exp(_READ_SLOPE * np.log(shot) + _READ_OFFSET + rng.normal(0, _READ_STD)))
    dark = _log_uniform(rng, exposure) * np.power(clean.astype(np.float64), g)
    noisy = dark + np.sqrt(shot * dark + read) * rng.standard_normal(clean.shape)
    return (np.round(255 * np.power(np.clip(noisy, 0, 1), 1 / g)) / 255).astype(np.float32)


@register(DATASET_REGISTRY)
class SyntheticLowLightDataset(SyntheticPairDataset):
    """Clean images with synthetic low light as ``lq`` (:func:`darken`); see :class:`SyntheticPairDataset` for
    the shared options and the seeding. With ``phase: test`` on CBSD68 it is the low-light benchmark with ground
    truth (image ``i`` seeded by ``i``).

    Degradation options (each ``[lo, hi]``, defaults in :data:`LOW_LIGHT_DEFAULTS`): ``gamma`` (in [1, 4]),
    ``exposure`` (in (0, 1]), ``shot_noise`` (in (0, 0.1]).
    """

    PARAMETER_KEYS = tuple(LOW_LIGHT_DEFAULTS)

    @classmethod
    def check_parameters(cls, opt: Mapping[str, Any], path: str) -> dict[str, Any]:
        bounds = {'gamma': (1.0, 4.0), 'exposure': (1e-4, 1.0), 'shot_noise': (1e-8, 0.1)}
        return {key: need_range(opt, path, key, default, minimum=bounds[key][0], maximum=bounds[key][1],
                                example=str(list(default)))
                for key, default in LOW_LIGHT_DEFAULTS.items()}

    degrade = staticmethod(darken)
