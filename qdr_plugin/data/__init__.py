"""Datasets of the qdr plugin; importing this package registers them in basicsr's ``DATASET_REGISTRY``."""

from . import (  # noqa: F401
    bicubic_sr_dataset,
    gaussian_noise_dataset,
    haze_dataset,
    low_light_dataset,
    paired_folder_dataset,
    rain_dataset,
)
from .bicubic_sr_dataset import BicubicSRDataset, bicubic_downscale
from .gaussian_noise_dataset import GaussianNoiseDataset, add_validation_noise
from .haze_dataset import SyntheticHazeDataset, add_haze
from .low_light_dataset import SyntheticLowLightDataset, darken
from .paired_folder_dataset import PairedFolderDataset, PairingRule
from .rain_dataset import SyntheticRainDataset, add_rain

__all__ = ['BicubicSRDataset', 'GaussianNoiseDataset', 'PairedFolderDataset', 'PairingRule', 'SyntheticHazeDataset',
           'SyntheticLowLightDataset', 'SyntheticRainDataset', 'add_haze', 'add_rain', 'add_validation_noise',
           'bicubic_downscale', 'darken']
