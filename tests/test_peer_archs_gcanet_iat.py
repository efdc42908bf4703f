"""GCANet and IAT: the archs take any image size, load the published state dicts strictly with their keys and shapes,
reproduce recorded outputs of the published weights on real test images, and export to ONNX files that ONNX Runtime
runs with the same output at two sizes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils import img2tensor, tensor2img
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.archs import IAT, GCANet
from qdr_plugin.data import SyntheticLowLightDataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
WEIGHTS = SHARED / 'weights'
DATASETS = SHARED / 'datasets'
GCANET_FILE = WEIGHTS / 'GCANet' / 'gcanet_dehaze.pth'
IAT_FILES = {'lol_v1': WEIGHTS / 'IAT' / 'IAT_lol_v1.pth', 'lol_v2_real': WEIGHTS / 'IAT' / 'IAT_lol_v2_real.pth'}
SOTS_HAZY = DATASETS / 'SOTS-indoor' / 'hazy' / '1400_1.png'
SOTS_CLEAR = DATASETS / 'SOTS-indoor' / 'clear' / '1400.png'
SOTS_CROP = (slice(100, 340), slice(150, 470))
"""A 240 x 320 crop of SOTS-indoor's 1400_1 (and its ground truth), to keep the test short."""

# Recorded with the published weights (and matched by an independent transcription of the original code): PSNR
# (basicsr, RGB, 8-bit output) and the BGR output at (row, col).
GCANET_CROP_PSNR = 24.668
GCANET_PIXELS = {(0, 0): [45, 25, 126], (57, 200): [12, 7, 5], (120, 160): [16, 4, 32], (239, 319): [25, 41, 96]}
IAT_PSNR = {'lol_v1': 19.273, 'lol_v2_real': 18.232}
"""On CBSD68-lowlight's first image (101085.png, 481 x 321, darkened with seed 0)."""
IAT_PIXELS = {
    'lol_v1': {(0, 0): [114, 140, 125], (57, 200): [66, 69, 65], (160, 240): [63, 64, 62], (480, 320): [89, 102, 94]},
    'lol_v2_real': {(0, 0): [113, 131, 133], (57, 200): [64, 64, 59], (160, 240): [60, 62, 59],
                    (480, 320): [56, 83, 104]},
}

pytestmark = pytest.mark.usefixtures('one_thread')


def _needs(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f'needs {", ".join(missing)}')


def _published(name: str) -> nn.Module:
    """The arch with its published weights (``gcanet``, ``lol_v1``, ``lol_v2_real``), loaded strictly, in eval mode."""
    path = GCANET_FILE if name == 'gcanet' else IAT_FILES[name]
    _needs(path)
    net = GCANet() if name == 'gcanet' else IAT(input_norm=name == 'lol_v2_real')
    net.load_state_dict(torch.load(path, map_location='cpu', weights_only=True))
    return net.eval()


def _rgb(path: Path, crop: tuple[slice, slice] | None = None) -> torch.Tensor:
    """``1 x 3 x H x W`` RGB tensor in [0, 1] of an image file (optionally cropped)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    image = image if crop is None else image[crop]
    return img2tensor(image.astype(np.float32) / 255.0, bgr2rgb=True, float32=True).unsqueeze(0)


def test_registered_with_published_defaults():
    assert ARCH_REGISTRY.get('GCANet') is GCANet
    assert ARCH_REGISTRY.get('IAT') is IAT
    assert sum(p.numel() for p in GCANet().parameters()) == 702_818
    assert sum(p.numel() for p in IAT().parameters()) == 91_154


@pytest.mark.parametrize('size', [(1, 13, 18), (2, 9, 7), (1, 16, 20)])
@pytest.mark.parametrize('arch', ['gcanet', 'iat'])
def test_random_init_any_size(arch: str, size: tuple[int, int, int]):
    torch.manual_seed(0)
    net = (GCANet(width=8) if arch == 'gcanet' else IAT()).eval()
    x = torch.rand(size[0], 3, *size[1:]) * 0.4
    with torch.no_grad():
        y = net(x)
    assert y.shape == x.shape
    assert y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert float(y.std()) > 0.0


@pytest.mark.parametrize('arch', ['gcanet', 'iat'])
def test_images_of_a_batch_are_independent(arch: str):
    """Instance norms, the per-channel smoothing convolution and the per-image gamma / colour matrix act on each
    image alone: a batch of two gives what each image gives on its own."""
    torch.manual_seed(1)
    net = (GCANet(width=8) if arch == 'gcanet' else IAT()).eval()
    x = torch.rand(2, 3, 12, 16) * torch.tensor([0.2, 0.6]).view(2, 1, 1, 1)
    with torch.no_grad():
        both = net(x)
        alone = torch.cat([net(x[:1]), net(x[1:])])
    torch.testing.assert_close(both, alone, atol=1e-5, rtol=0)
    assert not torch.allclose(both[0], both[1])


def test_gcanet_edge_map_is_the_published_formula():
    """E = (sum over channels of the absolute differences to the up to four neighbours) / 3 / 4, by loops."""
    image = torch.randint(0, 256, (1, 3, 5, 6)).float()
    img = image[0].numpy()
    expected = np.zeros((5, 6))
    for i in range(5):
        for j in range(6):
            for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                if 0 <= i + di < 5 and 0 <= j + dj < 6:
                    expected[i, j] += np.abs(img[:, i, j] - img[:, i + di, j + dj]).sum()
    np.testing.assert_allclose(GCANet.edge_map(image)[0, 0].numpy(), expected / 12, rtol=1e-6)


def test_gcanet_smoothing_starts_as_identity():
    """The shared separable convolutions start as the identity, so a fresh smoothed block is a plain dilated
    residual block."""
    block = GCANet(width=4).res4
    x = torch.rand(1, 4, 9, 11)
    for conv in (block.pre_conv1, block.pre_conv2):
        assert tuple(conv.weight.shape) == (1, 1, 7, 7)
        torch.testing.assert_close(conv(x.flatten(0, 1).unsqueeze(1)).reshape_as(x), x)


@pytest.mark.parametrize('name', ['gcanet', 'lol_v1', 'lol_v2_real'])
def test_state_dict_keys_and_shapes_equal_the_published_file(name: str):
    path = GCANET_FILE if name == 'gcanet' else IAT_FILES[name]
    _needs(path)
    published = torch.load(path, map_location='cpu', weights_only=True)
    ours = (GCANet() if name == 'gcanet' else IAT()).state_dict()
    assert list(ours) == list(published)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in published.items()}
    # GCANet's file is in torch's legacy (pre-1.6, not zip) serialization; it loads with weights_only=True too.
    assert zipfile.is_zipfile(path) == (name != 'gcanet')


def test_gcanet_published_weights_dehaze_a_sots_image():
    net = _published('gcanet')
    _needs(SOTS_HAZY, SOTS_CLEAR)
    with torch.inference_mode():
        out = tensor2img([net(_rgb(SOTS_HAZY, SOTS_CROP))])
    gt = cv2.imread(str(SOTS_CLEAR), cv2.IMREAD_COLOR)[SOTS_CROP]
    hazy = cv2.imread(str(SOTS_HAZY), cv2.IMREAD_COLOR)[SOTS_CROP]
    assert calculate_psnr(out, gt, 0) == pytest.approx(GCANET_CROP_PSNR, abs=0.01)
    assert calculate_psnr(out, gt, 0) > calculate_psnr(hazy, gt, 0) + 10
    for (row, col), bgr in GCANET_PIXELS.items():
        np.testing.assert_allclose(out[row, col].astype(int), bgr, atol=1)


@pytest.mark.parametrize('name', ['lol_v1', 'lol_v2_real'])
def test_iat_published_weights_brighten_a_cbsd68_lowlight_image(name: str):
    net = _published(name)
    _needs(DATASETS / 'CBSD68' / '101085.png')
    item = SyntheticLowLightDataset({'phase': 'test', 'dataroot_gt': str(DATASETS / 'CBSD68')})[0]
    with torch.inference_mode():
        out = tensor2img([net(item['lq'].unsqueeze(0))])
    gt, dark = tensor2img([item['gt'].unsqueeze(0)]), tensor2img([item['lq'].unsqueeze(0)])
    assert calculate_psnr(out, gt, 0) == pytest.approx(IAT_PSNR[name], abs=0.01)
    assert calculate_psnr(out, gt, 0) > calculate_psnr(dark, gt, 0) + 5
    for (row, col), bgr in IAT_PIXELS[name].items():
        np.testing.assert_allclose(out[row, col].astype(int), bgr, atol=1)


@pytest.mark.parametrize('name', ['gcanet', 'lol_v1'])
def test_onnx_export_matches_onnx_runtime_at_two_sizes(name: str, tmp_path: Path, onnx_parity):
    net = _published(name)
    image = SOTS_HAZY if name == 'gcanet' else DATASETS / 'LowLight-real' / 'easy_0016.png'
    _needs(image)
    path = tmp_path / f'{name}.onnx'
    torch.onnx.export(net, _rgb(image, (slice(0, 32), slice(0, 40))), str(path), opset_version=17,
                      input_names=['input'], output_names=['output'],
                      dynamic_axes={'input': {2: 'h', 3: 'w'}, 'output': {2: 'h', 3: 'w'}}, dynamo=False)
    for crop in ((slice(40, 88), slice(60, 124)), (slice(101, 138), slice(7, 58))):  # 48 x 64 and 37 x 51
        x = _rgb(image, crop)
        max_abs, _ = onnx_parity(path, net, x)
        assert max_abs < 1e-4
        with torch.no_grad():
            assert float(net(x).std()) > 0.01  # a real image's output, not one saturated by the clamp
