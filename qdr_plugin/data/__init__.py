"""Datasets of the qdr plugin; importing this package registers them in basicsr's ``DATASET_REGISTRY``."""

from . import gaussian_noise_dataset  # noqa: F401
from .gaussian_noise_dataset import GaussianNoiseDataset, add_validation_noise

__all__ = ['GaussianNoiseDataset', 'add_validation_noise']
