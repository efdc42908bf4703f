"""The benchmark sets and how they are scored (docs/evaluation.md).

Denoising: the clean images of ``<root>/<name>`` with the deterministic validation noise of
:class:`qdr_plugin.data.GaussianNoiseDataset` (image ``i`` of the name-sorted list gets
``numpy.random.default_rng(i).normal(0, sigma / 255, shape)``, no clipping); PSNR / SSIM on the 8-bit rounded
output, RGB for colour sets, no border crop.

Super-resolution: HR images from ``<root>/<name>/HR`` (or ``<root>/<name>`` itself when it has no ``HR`` folder),
mod-cropped to a multiple of the scale; LR images from ``<root>/<name>/LR_bicubic/X<s>/<stem>x<s>.<ext>`` when that
folder exists, otherwise made with basicsr's MATLAB-compatible bicubic ``imresize`` and rounded to 8 bit (both by
:class:`qdr_plugin.data.BicubicSRDataset`); RGB (a gray image is repeated to 3 channels); PSNR / SSIM on the Y
channel with ``crop_border = scale``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset, Subset

from qdr_plugin.data import BicubicSRDataset, GaussianNoiseDataset
from qdr_plugin.data.bicubic_sr_dataset import SCALES

TASKS = ('denoise', 'sr')
DENOISE_SETS = {'Set12': 1, 'BSD68': 1, 'CBSD68': 3, 'McMaster': 3}
"""Denoising sets and their channels (1 gray, 3 RGB)."""
SR_SETS = ('Set5', 'Set14')
"""Super-resolution sets (RGB; a gray image in them is repeated to 3 channels)."""
DEFAULT_SIGMAS = (15.0, 25.0, 50.0)


@dataclass
class BenchSet:
    """One dataset at one noise level (denoising) or one scale (super-resolution), ready for ``evaluate``."""

    name: str
    task: str
    channels: int
    dataset: Dataset
    images: list[str]
    folder: Path
    sigma: float | None = None
    scale: int = 1

    @property
    def crop_border(self) -> int:
        """Pixels cropped at each edge before scoring: the scale for super-resolution, none for denoising."""
        return self.scale if self.task == 'sr' else 0

    @property
    def test_y_channel(self) -> bool:
        """Super-resolution is scored on the Y channel, denoising on the gray / RGB image."""
        return self.task == 'sr'

    @property
    def setting(self) -> str:
        """``sigma 25`` or ``x4``: the setting shown in tables and plot titles."""
        return f'x{self.scale}' if self.task == 'sr' else f'sigma {self.sigma:g}'

    @property
    def key(self) -> tuple[str, float | None, int]:
        """What makes two rows comparable: the dataset, the noise level and the scale."""
        return self.name, self.sigma, self.scale


def _limit(dataset: Dataset, images: list[str], max_images: int | None) -> tuple[Dataset, list[str]]:
    """The first ``max_images`` images (their noise seeds stay those of the full set)."""
    if max_images is None or max_images >= len(images):
        return dataset, images
    return Subset(dataset, range(max_images)), images[:max_images]


def _set_folder(root: Path, name: str, known: tuple[str, ...] | list[str], task: str) -> Path:
    if name not in known:
        raise ValueError(f"unknown dataset '{name}' for --task {task}; choose from {', '.join(known)}.")
    folder = root / name
    if not folder.is_dir():
        raise FileNotFoundError(
            f'dataset folder {folder} does not exist; put the {name} images there or give --data-root DIR '
            f'(the folder that holds {", ".join(known)}).'
        )
    return folder


def denoise_set(root: str | Path, name: str, sigma: float, max_images: int | None = None) -> BenchSet:
    """``<root>/<name>`` with the validation noise of ``sigma`` (see the module docstring)."""
    folder = _set_folder(Path(root), name, list(DENOISE_SETS), 'denoise')
    channels = DENOISE_SETS[name]
    dataset = GaussianNoiseDataset(
        {'name': name, 'phase': 'test', 'dataroot_gt': str(folder), 'in_ch': channels, 'sigma': float(sigma)}
    )
    images = [Path(p).name for p in dataset.paths]
    dataset, images = _limit(dataset, images, max_images)
    return BenchSet(name, 'denoise', channels, dataset, images, folder, sigma=float(sigma))


def sr_set(root: str | Path, name: str, scale: int, max_images: int | None = None) -> BenchSet:
    """``<root>/<name>`` for super-resolution by ``scale`` (see the module docstring), read by
    :class:`qdr_plugin.data.BicubicSRDataset`."""
    if scale not in SCALES:
        raise ValueError(f'--scale must be one of {", ".join(map(str, SCALES))} for --task sr, got {scale}.')
    folder = _set_folder(Path(root), name, SR_SETS, 'sr')
    hr_folder = folder / 'HR' if (folder / 'HR').is_dir() else folder
    lr_folder = folder / 'LR_bicubic' / f'X{scale}'
    opt = {'name': name, 'phase': 'test', 'scale': scale, 'dataroot_gt': str(hr_folder), 'color': 'rgb'}
    if lr_folder.is_dir():
        opt.update(dataroot_lq=str(lr_folder), filename_tmpl=f'{{}}x{scale}')
    dataset = BicubicSRDataset(opt)
    dataset, images = _limit(dataset, [Path(p).name for p in dataset.paths], max_images)
    return BenchSet(name, 'sr', 3, dataset, images, hr_folder, scale=scale)
