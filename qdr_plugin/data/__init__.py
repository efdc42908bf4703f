"""Datasets of the qdr plugin; importing this package registers them in basicsr's ``DATASET_REGISTRY``."""

from . import bicubic_sr_dataset, gaussian_noise_dataset  # noqa: F401
from .bicubic_sr_dataset import BicubicSRDataset, bicubic_downscale
from .gaussian_noise_dataset import GaussianNoiseDataset, add_validation_noise

__all__ = ['BicubicSRDataset', 'GaussianNoiseDataset', 'add_validation_noise', 'bicubic_downscale']
