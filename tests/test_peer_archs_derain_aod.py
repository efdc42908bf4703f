"""PReNet and AOD-Net: the archs follow their equations, take the published state dicts strictly, reproduce the
published weights' outputs on real test images, and export to ONNX files that ONNX Runtime runs like PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from qdr_plugin.archs import AODNet, PReNet
from qdr_plugin.data import PairedFolderDataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
WEIGHTS = SHARED / 'weights'
DATASETS = SHARED / 'datasets'
PRENET_100H = WEIGHTS / 'PReNet' / 'PReNet6_Rain100H.pth'
PRENET_100L = WEIGHTS / 'PReNet' / 'PReNet6_Rain100L.pth'
AODNET = WEIGHTS / 'AODNet' / 'aodnet_dehazer.pth'

PIXELS = [(0, 0), (100, 200), (319, 479), (250, 37)]
"""(row, column) of the output pixels checked on real images; values below are 8-bit BGR."""
PRENET_1_PSNR_Y = 33.586826418167604  # Rain100H 1.png in benchmarks/results/peers_fp32_prenet_rain100h.json
PRENET_1_PIXELS = [[103, 121, 105], [85, 95, 59], [33, 40, 40], [124, 118, 58]]
PRENET_100L_CROP_PSNR_Y = 32.39423097025864  # Rain100H 1.png, rows 0-95, columns 0-127 (the rainy crop: 17.70)
AODNET_1400_1_PSNR = 20.780239578926306  # SOTS-indoor 1400_1.png in benchmarks/results/peers_fp32_aodnet.json
AODNET_1400_1_PIXELS = [[219, 218, 233], [44, 59, 130], [31, 99, 162], [103, 170, 252]]


def _load(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        pytest.skip(f'{path} is absent')
    return torch.load(path, map_location='cpu', weights_only=True)


def _pair(set_name: str, lq: str, gt: str, stem: str, pairing: dict | None = None) -> dict:
    """The test pair whose input is ``<set>/<lq>/<stem>.png``, as the benchmark reads it."""
    root = DATASETS / set_name
    if not root.is_dir():
        pytest.skip(f'{root} is absent')
    dataset = PairedFolderDataset({'phase': 'test', 'dataroot_lq': str(root / lq), 'dataroot_gt': str(root / gt),
                                   **({'pairing': pairing} if pairing else {})})
    return dataset[[Path(p).stem for p in dataset.paths].index(stem)]


def _restore(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The network's 8-bit output (BGR, H x W x 3), as the benchmark scores it."""
    with torch.inference_mode():
        return tensor2img([net(x.unsqueeze(0))])


def _assert_pixels(out: np.ndarray, expected: list[list[int]]) -> None:
    """The output at :data:`PIXELS` is ``expected`` within one 8-bit level (another CPU's kernels may round a value
    that sits on a half level the other way)."""
    got = np.array([out[r, c] for r, c in PIXELS], dtype=int)
    assert np.abs(got - np.array(expected)).max() <= 1, got.tolist()


def _psnr(out: np.ndarray, gt: torch.Tensor, y: bool) -> float:
    return calculate_psnr(out, tensor2img([gt.unsqueeze(0)]), 0, test_y_channel=y)


# ---------------------------------------------------------------- arch, random weights


def test_registered_with_the_published_sizes():
    assert ARCH_REGISTRY.get('PReNet') is PReNet and ARCH_REGISTRY.get('AODNet') is AODNet
    assert sum(p.numel() for p in PReNet().parameters()) == 168_963
    assert sum(p.numel() for p in AODNet().parameters()) == 1_761
    for net in (PReNet(), AODNet()):  # what the quantizer wraps, and nothing in place
        assert all(type(m) is nn.Conv2d for m in net.modules() if isinstance(m, nn.Conv2d))
        assert not any(getattr(m, 'inplace', False) for m in net.modules())


@pytest.mark.parametrize('size', [(13, 17), (1, 1), (8, 5)])
def test_random_forward_shape_and_range(one_thread, size):
    torch.manual_seed(0)
    x = torch.rand(2, 3, *size)
    for net in (PReNet(stages=3, width=8, blocks=2), AODNet()):
        with torch.inference_mode():
            out = net.eval()(x)
        assert out.shape == x.shape and out.dtype == torch.float32
        assert float(out.min()) >= 0 and float(out.max()) <= 1 and float(out.std()) > 0


def test_prenet_recurrence(one_thread):
    """With the output convolution zeroed every stage returns the rainy input (``x_t = y + W_out * r``); the stages
    share weights, so the network with T stages is the T-fold stage, each fed the previous estimate unclipped."""
    torch.manual_seed(1)
    net = PReNet(stages=3, width=8, blocks=2).eval()
    x = torch.rand(1, 3, 9, 11) * 1.4 - 0.2  # outside [0, 1]: only the final output is clamped
    with torch.inference_mode():
        hidden = cell = torch.zeros(1, 8, 9, 11)
        estimate = x
        for _ in range(3):
            estimate, hidden, cell = net.stage(x, estimate, hidden, cell)
        assert torch.equal(net(x), estimate.clamp(0, 1))
        assert float(hidden.abs().max()) < 1 and float(cell.abs().max()) < 3  # |c_t| <= t
        nn.init.zeros_(net.conv[0].weight)
        nn.init.zeros_(net.conv[0].bias)
        assert torch.equal(net(x), x.clamp(0, 1))


def test_aodnet_reformulated_model(one_thread):
    """A constant K = k gives J = clamp(k I - k + b, 0, 1)."""
    net = AODNet(b=0.9).eval()
    with torch.no_grad():
        nn.init.zeros_(net.e_conv5.weight)
        net.e_conv5.bias.fill_(2.5)
    x = torch.rand(1, 3, 7, 6)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), (2.5 * x - 2.5 + 0.9).clamp(0, 1))


# ---------------------------------------------------------------- published weights


@pytest.mark.parametrize('path, arch', [(PRENET_100H, PReNet), (PRENET_100L, PReNet), (AODNET, AODNet)])
def test_published_state_dict_loads_strictly(path, arch):
    """The legacy-format files load with ``weights_only=True``; keys (in order) and shapes are the arch's."""
    state = _load(path)
    reference = arch().state_dict()
    assert list(state) == list(reference)
    assert all(state[k].shape == v.shape and state[k].dtype == torch.float32 for k, v in reference.items())
    arch().load_state_dict(state, strict=True)


def test_prenet_rain100h_weights_on_rain100h(one_thread):
    """Rain100H image 1, whole: the PSNR-Y of benchmarks/results/peers_fp32_prenet_rain100h.json and a few output
    pixels."""
    net = PReNet().eval()
    net.load_state_dict(_load(PRENET_100H))
    pair = _pair('Rain100H', 'rainy', 'norain', '1')
    out = _restore(net, pair['lq'])
    assert _psnr(out, pair['gt'], y=True) == pytest.approx(PRENET_1_PSNR_Y, abs=0.01)
    _assert_pixels(out, PRENET_1_PIXELS)


def test_prenet_rain100l_weights_derain(one_thread):
    """The light-rain weights (Rain100L is not here) load and remove rain from a crop of Rain100H image 1."""
    net = PReNet().eval()
    net.load_state_dict(_load(PRENET_100L))
    pair = _pair('Rain100H', 'rainy', 'norain', '1')
    lq, gt = pair['lq'][:, :96, :128], pair['gt'][:, :96, :128]
    rainy = _psnr(tensor2img([lq.unsqueeze(0)]), gt, y=True)
    derained = _psnr(_restore(net, lq), gt, y=True)
    assert derained == pytest.approx(PRENET_100L_CROP_PSNR_Y, abs=0.01) and derained > rainy + 1


def test_aodnet_weights_on_sots_indoor(one_thread):
    """SOTS-indoor 1400_1, whole: the RGB PSNR of benchmarks/results/peers_fp32_aodnet.json and a few pixels."""
    net = AODNet().eval()
    net.load_state_dict(_load(AODNET))
    pair = _pair('SOTS-indoor', 'hazy', 'clear', '1400_1', {'lq': '{scene}_{level}', 'gt': '{scene}'})
    out = _restore(net, pair['lq'])
    assert _psnr(out, pair['gt'], y=False) == pytest.approx(AODNET_1400_1_PSNR, abs=0.01)
    _assert_pixels(out, AODNET_1400_1_PIXELS)


# ---------------------------------------------------------------- ONNX


@pytest.mark.parametrize('arch', [PReNet, AODNet])
def test_onnx_export_matches_onnx_runtime(one_thread, tmp_path, arch):
    """Opset 17, dynamic H and W: ONNX Runtime's output equals PyTorch's (< 1e-4) at two sizes."""
    torch.manual_seed(2)
    net = arch().eval()
    path = tmp_path / f'{arch.__name__}.onnx'
    torch.onnx.export(net, torch.rand(1, 3, 24, 31), path, opset_version=17, input_names=['input'],
                      output_names=['output'], dynamic_axes={'input': {2: 'h', 3: 'w'}, 'output': {2: 'h', 3: 'w'}},
                      dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    for size in ((24, 31), (37, 20)):
        x = torch.rand(1, 3, *size)
        with torch.inference_mode():
            expected = net(x).numpy()
        (got,) = session.run(['output'], {'input': x.numpy()})
        assert got.shape == expected.shape
        assert float(np.abs(got - expected).max()) < 1e-4
