"""Shared fixtures: tiny image folders, tiny QDR options and their mmengine config, so tests go through the real
basicsr and mmengine paths fast."""

from __future__ import annotations

import copy
import logging
import math
import re
import socket
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import qdr_plugin  # noqa: F401  (registers the plugin, applies the torchvision alias)
from qdr_plugin.deploy.no_vnni import int8_weights_saturate

REPO = Path(__file__).resolve().parents[1]


def forget_basicsr_logger() -> None:
    """basicsr sets its logger (and its log file) up once per process; forget it, so the next run in this process
    writes its own log, as a run of the ``basicsr`` command does."""
    from basicsr.utils import logger as basicsr_logger  # after qdr_plugin's torchvision alias

    logger = logging.getLogger('basicsr')
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    basicsr_logger.initialized_logger.pop('basicsr', None)


@pytest.fixture(autouse=True)
def _fresh_basicsr_logger():
    """Each test ends with basicsr's logger unset: a handler a run set up writes to that test's captured stream,
    which is closed once the test ends."""
    yield
    forget_basicsr_logger()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def cannot_create_in(folder: str) -> bool:
    """Whether this process cannot create a file in ``folder`` (root can write almost anywhere, so tests ask)."""
    try:
        Path(folder, '.qdr_probe').touch()
    except OSError:
        return True
    Path(folder, '.qdr_probe').unlink()
    return False


@pytest.fixture
def one_thread():
    """Tiny convolutions run much faster on one thread when the CPU is shared, and CPU results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def refusal(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The one-line message with which ``basicsr <argv>`` stops: the :class:`UserError`, or what the command
    printed last when it turns that into an exit."""
    from qdr_plugin.cli import main
    from qdr_plugin.errors import UserError

    try:
        main(argv)
    except UserError as error:
        return str(error)
    except SystemExit as error:
        line = error.code if isinstance(error.code, str) else capsys.readouterr().err.strip().splitlines()[-1]
        return re.sub(r'^basicsr \w+: ', '', line)
    raise AssertionError(f'basicsr {" ".join(argv)} was not refused')


TINY_OPTIONS = {
    'name': 'tiny',
    'model_type': 'QDRModel',
    'num_gpu': 0,
    'manual_seed': 0,
    'quant': {'bits': 8, 'calib_batches': 2},
    'datasets': {
        'train': {
            'name': 'tiny_train', 'type': 'GaussianNoiseDataset', 'dataroot_gt': 'images/train', 'in_ch': 1,
            'sigma': 25, 'gt_size': 16, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
            'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 4,
        },
        'val': {'name': 'tiny_val', 'type': 'GaussianNoiseDataset', 'dataroot_gt': 'images/val', 'in_ch': 1,
                'sigma': 25},
    },
    'network_g': {'type': 'EFM', 'in_ch': 1, 'width': 4, 'depth': 2},
    'path': {'pretrain_network_g': None, 'strict_load_g': True},
    'train': {
        'fp32_warmup_iter': 1,
        'optim_g': {'type': 'Adam', 'lr': 1e-3},
        'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
        'total_iter': 3,
        'warmup_iter': -1,
        'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
        'dfd_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
        'lmr_opt': {'type': 'gradnorm'},
    },
    'val': {'val_freq': 3, 'save_img': False,
            'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
    'logger': {'print_freq': 1, 'save_checkpoint_freq': 3, 'use_tb_logger': False},
}


def _write_images(folder: Path, count: int, size: tuple[int, int], seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    for i in range(count):
        img = 128 + 60 * np.sin(xx / (3 + i)) * np.cos(yy / (4 + i)) + rng.normal(0, 5, size)
        cv2.imwrite(str(folder / f'{i:03d}.png'), np.clip(img, 0, 255).astype(np.uint8))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with ``images/train`` (4 x 24x24) and ``images/val`` (2 x 20x28), as cwd."""
    _write_images(tmp_path / 'images' / 'train', 4, (24, 24), 0)
    _write_images(tmp_path / 'images' / 'val', 2, (20, 28), 1)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        elif value is _DELETE:
            base.pop(key, None)
        else:
            base[key] = value
    return base


_DELETE = object()


@pytest.fixture
def delete_key() -> object:
    """Sentinel: an override value that removes the key."""
    return _DELETE


@pytest.fixture
def write_options(workdir: Path):
    """``write_options(name=..., **overrides) -> Path`` of a tiny options YAML in ``workdir``."""

    def write(name: str = 'tiny', **overrides) -> Path:
        options = _merge(copy.deepcopy(TINY_OPTIONS), overrides)
        options['name'] = name
        path = workdir / f'{name}.yml'
        path.write_text(yaml.safe_dump(options, sort_keys=False))
        return path

    return write


@pytest.fixture
def parse_yml(monkeypatch: pytest.MonkeyPatch):
    """``parse_yml(path, is_train) -> opt``: basicsr's own ``parse_options`` on an options file, as ``basicsr
    train`` / ``basicsr test`` would see it."""
    from basicsr.utils.options import parse_options

    def parse(path: Path, is_train: bool) -> dict:
        monkeypatch.setattr(sys, 'argv', ['basicsr', '-opt', str(path)])
        return parse_options(str(path.parent), is_train=is_train)[0]

    return parse


NOISY_PIPELINE = """[
    dict(type='LoadImage', key='gt', channels=1),
    dict(type='PairedRandomCrop', gt_size=16, keys=['gt']),
    dict(type='Flip', keys=['gt']),
    dict(type='AddGaussianNoise', sigma=25),
    dict(type='PackInputs'),
]"""

MM_SAMPLERS = {
    'mmengine': "dict(type='InfiniteSampler', shuffle=True)",
    'basicsr': "dict(type='EnlargedSampler', ratio=2), drop_last=True",  # the data order of TINY_OPTIONS' run
}

TRAIN_SETS = {
    'basicsr': """dict(type='BasicSRDataset', opt=dict(type='GaussianNoiseDataset', dataroot_gt='images/train',
    in_ch=1, sigma=25, gt_size=16, use_hflip=True, use_rot=True))""",
    'pipeline': f"dict(type='ImageFolderDataset', gt_folder='images/train', pipeline={NOISY_PIPELINE})",
}

MM_CONFIG = """_base_ = ['{base}']
model = dict(
    type='QDRRestorer',
    network_g=dict(type='EFM', in_ch=1, width=4, depth=2),
    quant=dict(bits=8, calib_batches=2),
    train=dict(fp32_warmup_iter=2, pixel_opt=dict(type='L1Loss', loss_weight=1.0),
               dfd_opt=dict(type='L1Loss', loss_weight=1.0), lmr_opt=dict(type='gradnorm')),
)
train_dataloader = dict(batch_size=2, num_workers={workers}, sampler={sampler},
                        collate_fn=dict(type='default_collate'), dataset={train_set})
val_dataloader = dict(batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                      collate_fn=dict(type='default_collate'),
                      dataset=dict(type='ImageFolderDataset', gt_folder='images/val', test_mode=True, pipeline=[
                          dict(type='LoadImage', key='gt', channels=1),
                          dict(type='AddGaussianNoise', sigma=25, seeded=True),
                          dict(type='PackInputs')]))
test_dataloader = val_dataloader
val_evaluator = dict(type='QDRMetric')
test_evaluator = val_evaluator
train_cfg = dict(type='QDRIterBasedTrainLoop', max_iters={iters}, val_interval={iters})
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(constructor='QDROptimWrapperConstructor', optimizer=dict(type='Adam', lr=1e-3))
param_scheduler = dict(type='MultiStepLR', milestones=[100], gamma=0.5, by_epoch=False)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2, max_keep_ckpts=-1))
"""


@pytest.fixture
def mm_config(workdir: Path):
    """``mm_config(train_set='basicsr' | 'pipeline', iters=5, order='mmengine' | 'basicsr', workers=0) -> Path`` of
    a tiny config of the mmengine front (the model and data of :data:`TINY_OPTIONS`) inheriting the repo's runtime
    ``_base_``; ``order`` picks the training sampler (:data:`MM_SAMPLERS`)."""

    def write(train_set: str = 'basicsr', iters: int = 5, name: str = 'tiny_mm', order: str = 'mmengine',
              workers: int = 0) -> Path:
        path = workdir / f'{name}.py'
        base = REPO / 'configs' / '_base_' / 'default_runtime.py'
        path.write_text(MM_CONFIG.format(base=base, train_set=TRAIN_SETS[train_set], iters=iters,
                                         sampler=MM_SAMPLERS[order], workers=workers))
        return path

    return write


NO_VNNI = int8_weights_saturate()
"""Whether this CPU needs the ``no_vnni`` form of an ONNX Runtime INT8 file to run it exactly
(:mod:`qdr_plugin.deploy.no_vnni`): the parity tests export the form meant for the CPU they run on."""
CLI_NO_VNNI = ['--no-vnni'] if NO_VNNI else []


def _tensorrt_form(path: str | Path) -> bool:
    """Whether the file is an export for TensorRT (int8 activations: a QuantizeLinear with an int8 zero point)."""
    import onnx

    from qdr_plugin.deploy.graph_rewrites import constant_values

    graph = onnx.load(str(path)).graph
    values = constant_values(graph)
    return any(node.op_type == 'QuantizeLinear' and len(node.input) > 2 and values[node.input[2]].dtype == np.int8
               for node in graph.node)


def run_onnx(path: str | Path, x: torch.Tensor) -> np.ndarray:
    """ONNX Runtime's (CPU) output of the model file ``path`` for the input ``x``. A TensorRT-form file runs with
    ONNX Runtime's integer-kernel rewrite off: what TensorRT computes is the graph's Q/DQ arithmetic, not ONNX
    Runtime's uint8 x int8 kernels (which saturate on a CPU without VNNI)."""
    import onnxruntime as ort

    disabled = ['QDQSelectorActionTransformer'] if _tensorrt_form(path) else None
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'], disabled_optimizers=disabled)
    return session.run(None, {'input': x.numpy()})[0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two arrays on the [0, 1] scale (``inf`` when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.fixture
def onnx_parity():
    """``onnx_parity(path, net, x) -> (max_abs, psnr_db)``: ONNX Runtime's output of ``path`` against the PyTorch
    (fake-quant) ``net(x)``; also checks that both have the same shape."""

    def compare(path: str | Path, net: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            expected = net.eval()(x).numpy()
        got = run_onnx(path, x)
        assert got.shape == expected.shape
        return float(np.abs(got - expected).max()), _psnr(got, expected)

    return compare
