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

Deraining, dehazing, low light: pairs of (degraded input, ground truth), no border crop.

- ``Rain100H``: ``rainy/N.png`` paired with ``norain/N.png`` (same stem), scored on the Y channel.
- ``SOTS-indoor``: ``hazy/{scene}_{level}.png`` paired with ``clear/{scene}.png``, RGB; 150 of the 500 images.
- ``CBSD68-lowlight``: the clean images of ``<root>/CBSD68`` darkened by
  :class:`qdr_plugin.data.SyntheticLowLightDataset` (image ``i`` seeded by ``i``), RGB.
- ``LowLight-real``: real low-light photos without ground truth; a model is scored against the reference model's
  8-bit output (INT8-vs-FP32 fidelity), RGB.

A ``datasets:`` block of the options file is a set too (:func:`options_set`): built through basicsr's
``DATASET_REGISTRY`` with phase ``test``, scored as the options' ``val.metrics.psnr`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from basicsr.utils import img2tensor
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils.data import Dataset, Subset

from qdr_plugin.data import BicubicSRDataset, GaussianNoiseDataset, PairedFolderDataset, SyntheticLowLightDataset
from qdr_plugin.data.bicubic_sr_dataset import SCALES
from qdr_plugin.data.image_source import ImageSource
from qdr_plugin.option_rules import OptionsError, check_registered

TASKS = ('denoise', 'sr', 'derain', 'dehaze', 'lowlight')
DENOISE_SETS = {'Set12': 1, 'BSD68': 1, 'CBSD68': 3, 'McMaster': 3}
"""Denoising sets and their channels (1 gray, 3 RGB)."""
SR_SETS = ('Set5', 'Set14')
"""Super-resolution sets (RGB; a gray image in them is repeated to 3 channels)."""
DEFAULT_SIGMAS = (15.0, 25.0, 50.0)
SOTS_NOTE = ('SOTS-indoor here holds 150 of the 500 hazy images (haze levels 1, 5 and 9 of the 10 per scene); '
             'published SOTS-indoor numbers use all 500.')


@dataclass(frozen=True)
class PairedSpec:
    """A standard set of the restoration tasks: where its images are under ``--data-root`` and how it is scored.

    ``lq`` / ``gt``: the sub-folders of ``folder`` holding the inputs and the ground truths, paired by ``pairing``
    (:class:`qdr_plugin.data.PairedFolderDataset`); ``synthetic``: the inputs are made from the clean images in
    ``folder`` by :class:`qdr_plugin.data.SyntheticLowLightDataset`; neither: ``folder`` holds inputs without
    ground truth.
    """

    task: str
    folder: str
    lq: str | None = None
    gt: str | None = None
    pairing: Mapping[str, str] | None = None
    test_y_channel: bool = False
    synthetic: bool = False
    note: str = ''


PAIRED_SETS = {
    'Rain100H': PairedSpec('derain', 'Rain100H', 'rainy', 'norain', test_y_channel=True),
    'SOTS-indoor': PairedSpec('dehaze', 'SOTS-indoor', 'hazy', 'clear', {'lq': '{scene}_{level}', 'gt': '{scene}'},
                              note=SOTS_NOTE),
    'CBSD68-lowlight': PairedSpec('lowlight', 'CBSD68', synthetic=True),
    'LowLight-real': PairedSpec('lowlight', 'LowLight-real'),
}
"""The sets of ``--task derain | dehaze | lowlight``, by name."""


def task_sets(task: str) -> tuple[str, ...]:
    """The standard set names of ``task`` (its default ``--datasets``, except denoising's channel choice)."""
    if task == 'denoise':
        return tuple(DENOISE_SETS)
    if task == 'sr':
        return SR_SETS
    return tuple(name for name, spec in PAIRED_SETS.items() if spec.task == task)


@dataclass
class BenchSet:
    """One dataset (at one noise level for denoising, one scale for super-resolution), ready for ``evaluate``
    with its ``crop_border`` and ``test_y_channel``.

    ``has_gt`` ``False``: the items hold no ``gt``; models are scored against the reference model's output.
    ``note``: what a reader of the results must know about the set (shown under the table, stored in the JSON).
    """

    name: str
    task: str
    channels: int
    dataset: Dataset
    images: list[str]
    folder: Path
    sigma: float | None = None
    scale: int = 1
    crop_border: int = 0
    test_y_channel: bool = False
    has_gt: bool = True
    note: str = ''

    @property
    def scored_on(self) -> str:
        """What PSNR / SSIM are computed on: ``Y``, ``RGB`` or ``gray``, and the border crop if any."""
        channels = 'Y' if self.test_y_channel else 'RGB' if self.channels == 3 else 'gray'
        return f'{channels}, crop {self.crop_border}' if self.crop_border else channels

    @property
    def setting(self) -> str:
        """``sigma 25``, ``x4`` or (paired sets) what the metrics are computed on: shown in tables and titles."""
        if self.sigma is not None:
            return f'sigma {self.sigma:g}'
        return f'x{self.scale}' if self.scale != 1 else self.scored_on

    @property
    def label(self) -> str:
        """A file-name part unique per set and setting: ``BSD68_sigma25``, ``Set5_x4``, ``Rain100H``."""
        if self.sigma is not None:
            return f'{self.name}_sigma{self.sigma:g}'
        return f'{self.name}_x{self.scale}' if self.scale != 1 else self.name

    @property
    def key(self) -> tuple[str, float | None, int]:
        """What makes two rows comparable: the dataset, the noise level and the scale."""
        return self.name, self.sigma, self.scale


class InputImages(Dataset):
    """The images of one folder as inputs without ground truth: items ``{'lq', 'lq_path'}``, ``lq`` a float32
    ``C x H x W`` tensor in [0, 1] (RGB for ``channels`` 3), read as :class:`qdr_plugin.data.image_source.ImageSource`
    reads them; ``paths`` in name order."""

    def __init__(self, folder: Path, channels: int, name: str) -> None:
        self.source = ImageSource(str(folder), None, name, key='folder', what='input images')
        self.paths, self.channels = self.source.paths, channels

    def __getitem__(self, index: int) -> dict[str, Any]:
        img, _ = self.source.read(self.paths[index], self.channels)
        return {'lq': img2tensor(img, bgr2rgb=False, float32=True), 'lq_path': self.paths[index]}

    def __len__(self) -> int:
        return len(self.paths)


def _limit(dataset: Dataset, images: list[str], max_images: int | None) -> tuple[Dataset, list[str]]:
    """The first ``max_images`` images (their noise seeds stay those of the full set)."""
    if max_images is None or max_images >= len(images):
        return dataset, images
    return Subset(dataset, range(max_images)), images[:max_images]


def _missing(folder: Path, name: str, task: str) -> FileNotFoundError:
    """The error of a missing set folder: ``folder`` should hold (part of) the images of ``name``, a set (or, for
    the paired tasks, a set folder) of ``task``."""
    names = task_sets(task)
    holds = names if task in ('denoise', 'sr') else [PAIRED_SETS[n].folder for n in names]
    return FileNotFoundError(
        f'dataset folder {folder} does not exist; put the {name} images there or give --data-root DIR '
        f'(the folder that holds {", ".join(dict.fromkeys(holds))}).'
    )


def _set_folder(root: Path, name: str, task: str) -> Path:
    if name not in task_sets(task):
        raise ValueError(f"unknown dataset '{name}' for --task {task}; choose from {', '.join(task_sets(task))}.")
    folder = root / name
    if not folder.is_dir():
        raise _missing(folder, name, task)
    return folder


def denoise_set(root: str | Path, name: str, sigma: float, max_images: int | None = None) -> BenchSet:
    """``<root>/<name>`` with the validation noise of ``sigma`` (see the module docstring)."""
    folder = _set_folder(Path(root), name, 'denoise')
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
    folder = _set_folder(Path(root), name, 'sr')
    hr_folder = folder / 'HR' if (folder / 'HR').is_dir() else folder
    lr_folder = folder / 'LR_bicubic' / f'X{scale}'
    opt = {'name': name, 'phase': 'test', 'scale': scale, 'dataroot_gt': str(hr_folder), 'color': 'rgb'}
    if lr_folder.is_dir():
        opt.update(dataroot_lq=str(lr_folder), filename_tmpl=f'{{}}x{scale}')
    dataset = BicubicSRDataset(opt)
    dataset, images = _limit(dataset, [Path(p).name for p in dataset.paths], max_images)
    return BenchSet(name, 'sr', 3, dataset, images, hr_folder, scale=scale, crop_border=scale, test_y_channel=True)


def paired_set(root: str | Path, name: str, max_images: int | None = None) -> BenchSet:
    """The standard set ``name`` of :data:`PAIRED_SETS` under ``root`` (see the module docstring), RGB."""
    spec = PAIRED_SETS[name]
    folder = Path(root) / spec.folder
    for sub in (folder, *(folder / s for s in (spec.lq, spec.gt) if s is not None)):
        if not sub.is_dir():
            raise _missing(sub, spec.folder, spec.task)
    base = {'name': name, 'phase': 'test', 'in_ch': 3}
    if spec.synthetic:
        dataset = SyntheticLowLightDataset({**base, 'dataroot_gt': str(folder)})
    elif spec.gt is None:
        dataset = InputImages(folder, 3, name)
    else:
        opt = {**base, 'dataroot_lq': str(folder / spec.lq), 'dataroot_gt': str(folder / spec.gt)}
        dataset = PairedFolderDataset({**opt, 'pairing': dict(spec.pairing)} if spec.pairing else opt)
    dataset, images = _limit(dataset, [Path(p).name for p in dataset.paths], max_images)
    return BenchSet(name, spec.task, 3, dataset, images, folder, test_y_channel=spec.test_y_channel,
                    has_gt=spec.gt is not None or spec.synthetic, note=spec.note)


def _image_names(dataset: Dataset) -> list[str]:
    """The input file names of a registered dataset: from its ``paths`` (file paths, or basicsr's dicts with
    ``lq_path``), else from its items' ``lq_path``."""
    paths = getattr(dataset, 'paths', None)
    if paths is None or len(paths) != len(dataset):
        paths = [dataset[i]['lq_path'] for i in range(len(dataset))]
    return [Path(p['lq_path'] if isinstance(p, Mapping) else p).name for p in paths]


def options_set(opt: Mapping[str, Any], block: str, task: str, max_images: int | None = None) -> BenchSet:
    """The ``datasets.<block>`` entry of the options ``opt`` as a benchmark set: built by its ``type`` from basicsr's
    ``DATASET_REGISTRY`` with phase ``test``, named by its ``name`` (else ``block``), scored with the options'
    ``val.metrics.psnr`` ``test_y_channel`` and ``crop_border`` (default RGB / gray, no crop). Its channels and
    scale are those of its first item (``gt`` width / ``lq`` width)."""
    path = f'datasets.{block}'
    entry = dict(opt['datasets'][block])
    cls = check_registered(entry, path, DATASET_REGISTRY, 'dataset')
    kind = entry.pop('type')
    dataset = cls({**entry, 'phase': 'test'})
    first = dataset[0]
    if 'gt' not in first:
        raise OptionsError(f'{path}.type', 'gives items without gt, so it cannot be scored', kind,
                           'Bench a dataset that returns lq and gt (e.g. PairedFolderDataset).')
    metric = ((opt.get('val') or {}).get('metrics') or {}).get('psnr') or {}
    name = str(entry.get('name') or block)
    images = _image_names(dataset)
    dataset, images = _limit(dataset, images, max_images)
    folder = Path(str(entry.get('dataroot_lq') or entry.get('dataroot_gt') or '.'))
    return BenchSet(name, task, int(first['lq'].shape[0]), dataset, images, folder,
                    scale=max(1, first['gt'].shape[-1] // first['lq'].shape[-1]),
                    crop_border=int(metric.get('crop_border', 0)), test_y_channel=bool(metric.get('test_y_channel')))
