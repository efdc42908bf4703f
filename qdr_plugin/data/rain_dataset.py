"""Synthetic rain streaks on clean images (deraining training pairs).

Rain model (additive streak layers, as the synthetic sets Rain100H / Rain100L were made)::

    I = clip(J + sum_k S_k, 0, 1),    S_k = a_k * (M_k * K_k)

``J`` the clean image, ``M_k`` a sparse field of streak seeds (each pixel a seed with probability ``rho_k``, of
brightness ``U(0.5, 1)``), ``K_k`` a motion-blur kernel (a line of length ``L_k`` at angle ``theta_k`` from the
vertical, widened by a Gaussian of std ``w_k / 2``, peak 1), ``*`` 2-D convolution and ``a_k`` the layer's intensity.
Streaks are achromatic (added to all channels). The layers share a base angle and deviate by up to 10 degrees, as
wind bends every streak of a scene alike.
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

__all__ = ['RAIN_DEFAULTS', 'SyntheticRainDataset', 'add_rain', 'streak_kernel']

RAIN_DEFAULTS = {
    'streak_layers': (1, 3),
    'streak_density': (0.002, 0.008),
    'streak_length': (20, 60),
    'streak_width': (0.8, 2.0),
    'streak_angle': (-30.0, 30.0),
    'streak_intensity': (0.25, 0.5),
}
"""Default ``[lo, hi]`` ranges (drawn uniformly per image, per layer where it applies). Heavy rain, like Rain100H:
one to three layers, up to 0.8 % of the pixels seeding a streak of 20-60 px, 1-2 px wide; on CBSD68 the rainy
images score 14.5 dB PSNR-Y on average (Rain100H's: 13.55 dB)."""

_LAYER_SPREAD = 10.0  # degrees a layer's angle may differ from the image's base angle


def streak_kernel(length: float, width: float, angle: float) -> np.ndarray:
    """The motion-blur kernel ``K`` of one streak: a line of ``length`` px through the centre, ``angle`` degrees from
    the vertical (positive: leaning right at the top), blurred by a Gaussian of std ``width / 2``, peak 1."""
    half = int(np.ceil(length / 2 + width)) + 1
    kernel = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
    theta = np.deg2rad(angle)
    dx, dy = np.sin(theta) * length / 2, -np.cos(theta) * length / 2
    cv2.line(kernel, (round(half - dx), round(half - dy)), (round(half + dx), round(half + dy)), 1.0, 1, cv2.LINE_AA)
    kernel = cv2.GaussianBlur(kernel, (0, 0), max(width / 2, 0.3))
    return kernel / kernel.max()


def add_rain(clean: np.ndarray, rng: np.random.Generator, streak_layers: tuple[float, float],
             streak_density: tuple[float, float], streak_length: tuple[float, float],
             streak_width: tuple[float, float], streak_angle: tuple[float, float],
             streak_intensity: tuple[float, float]) -> np.ndarray:
    """``clip(J + sum_k S_k, 0, 1)`` (module docstring) with parameters drawn from the given ``[lo, hi]`` ranges.

    Args:
        clean: Float32 ``H x W x C`` image in [0, 1].
        rng: The generator every random draw comes from.
        streak_layers: Range of the number of layers (an integer is drawn from it).
        streak_density, streak_length, streak_width, streak_angle, streak_intensity: Ranges of ``rho_k``, ``L_k``
            (px), ``w_k`` (px), the base ``theta`` (degrees) and ``a_k``.

    Returns:
        The rainy image, float32, same shape.
    """
    h, w = clean.shape[:2]
    layers = int(rng.integers(round(streak_layers[0]), round(streak_layers[1]) + 1))
    base = rng.uniform(*streak_angle)
    rain = np.zeros((h, w), np.float32)
    for _ in range(layers):
        seeds = (rng.random((h, w)) < rng.uniform(*streak_density)) * rng.uniform(0.5, 1.0, (h, w))
        angle = base + rng.uniform(-_LAYER_SPREAD, _LAYER_SPREAD)
        kernel = streak_kernel(rng.uniform(*streak_length), rng.uniform(*streak_width), angle)
        layer = cv2.filter2D(seeds.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)
        rain += rng.uniform(*streak_intensity) * np.minimum(layer, 1.0)
    return np.clip(clean + rain[..., None], 0.0, 1.0).astype(np.float32)


@register(DATASET_REGISTRY)
class SyntheticRainDataset(SyntheticPairDataset):
    """Clean images with synthetic rain streaks as ``lq`` (:func:`add_rain`); see :class:`SyntheticPairDataset`
    for the shared options and the seeding.

    Degradation options (each ``[lo, hi]``, defaults in :data:`RAIN_DEFAULTS`): ``streak_layers``,
    ``streak_density`` (fraction of pixels seeding a streak, <= 0.1), ``streak_length`` (px),
    ``streak_width`` (px), ``streak_angle`` (degrees from vertical, within [-80, 80]), ``streak_intensity``
    (<= 1).
    """

    PARAMETER_KEYS = tuple(RAIN_DEFAULTS)

    @classmethod
    def check_parameters(cls, opt: Mapping[str, Any], path: str) -> dict[str, Any]:
        bounds = {'streak_layers': (1, 8), 'streak_density': (0, 0.1), 'streak_length': (1, 200),
                  'streak_width': (0.1, 20), 'streak_angle': (-80, 80), 'streak_intensity': (0, 1)}
        return {key: need_range(opt, path, key, default, minimum=bounds[key][0], maximum=bounds[key][1],
                                example=str(list(default)))
                for key, default in RAIN_DEFAULTS.items()}

    degrade = staticmethod(add_rain)
