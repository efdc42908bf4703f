"""The mmengine front end of QDR (optional extra ``pip install -e .[mm]``: mmengine and mmcv-lite).

Importing it registers, under the scope ``qdr_plugin`` (:mod:`.registry`): the model ``QDRRestorer``, the hook
``QATSwitchHook``, the metric ``QDRMetric``, the optimizer-wrapper constructor ``QDROptimWrapperConstructor``, the
train loop ``QDRIterBasedTrainLoop``, the model wrapper ``QDRDistributedDataParallel``, the datasets
``ImageFolderDataset`` / ``BasicSRDataset`` and the transforms of :mod:`.data.transforms`. The plugin's archs,
datasets and losses are registered in basicsr's registries as for the BasicSR front.

    python -m qdr_plugin.mm train configs/qdr_efm_denoise_demo.py
"""

from . import data, ddp, hooks, loops, metric, model, optim, registry

__all__ = ['data', 'ddp', 'hooks', 'loops', 'metric', 'model', 'optim', 'registry']
