"""The SSM surrogate block: the parallel scan against the sequential recurrence, the block's shapes and identity
start, cost linear in H x W (operation sizes counted, nothing timed), and ONNX Runtime parity at several sizes."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from qdr_plugin.archs.restormer_arch import TransformerBlock
from qdr_plugin.archs.ssm_arch import SSMBlock, four_way_scan, parallel_scan, scan_channels
from qdr_plugin.deploy.onnx_export import export_onnx


def sequential_scan(v: torch.Tensor, a: torch.Tensor, dim: int, reverse: bool, window: int | None = None):
    """``h_t = a_t h_{t-1} + v_t`` one position at a time (over the last ``window`` positions when given)."""
    v, a = v.movedim(dim, -1), a.movedim(dim, -1)
    if reverse:
        v, a = v.flip(-1), a.flip(-1)
    length = v.shape[-1]
    out = torch.zeros_like(v)
    for t in range(length):
        weight = torch.ones_like(v[..., 0])
        for s in range(t, max(-1, t - (window or length)), -1):
            out[..., t] += weight * v[..., s]
            weight = weight * a[..., s]
    if reverse:
        out = out.flip(-1)
    return out.movedim(-1, dim)


@pytest.mark.parametrize('reverse', [False, True])
@pytest.mark.parametrize('dim', [2, 3])
def test_parallel_scan_is_the_recurrence_within_its_window_and_truncated_beyond(dim, reverse):
    torch.manual_seed(0)
    v, a = torch.randn(1, 2, 19, 21), torch.rand(1, 2, 19, 21)
    exact = sequential_scan(v, a, dim, reverse)
    torch.testing.assert_close(parallel_scan(v, a, dim, 5, reverse), exact, atol=1e-5, rtol=1e-5)  # 32 >= 21
    torch.testing.assert_close(parallel_scan(v, a, dim, 3, reverse), sequential_scan(v, a, dim, reverse, window=8),
                               atol=1e-5, rtol=1e-5)


def test_four_way_scan_runs_each_channel_quarter_in_its_own_order():
    torch.manual_seed(0)
    v, a = torch.randn(1, 8, 11, 17), torch.rand(1, 8, 11, 17)
    orders = ((3, False), (3, True), (2, False), (2, True))  # rows ->, rows <-, columns down, columns up
    expected = torch.cat([sequential_scan(vq, aq, dim, reverse)
                          for vq, aq, (dim, reverse) in zip(v.chunk(4, 1), a.chunk(4, 1), orders)], 1)
    torch.testing.assert_close(four_way_scan(v, a, steps=5), expected, atol=1e-5, rtol=1e-5)


def test_block_keeps_the_transformer_block_shape_and_starts_as_the_identity():
    x = torch.randn(2, 16, 12, 20)
    block = SSMBlock(16, expand=1.5, scan_steps=4)
    assert block(x).shape == TransformerBlock(16, 2, 2.66, False, 'WithBias')(x).shape
    assert torch.equal(block(x), x)
    assert scan_channels(16, 1.5) == 24 and scan_channels(6, 1.0) == 8
    nn_init = SSMBlock(16, scan_steps=4)
    torch.nn.init.normal_(nn_init.out_proj.weight)
    assert not torch.equal(nn_init(x), x)


class ElementCount(TorchDispatchMode):
    """Sums the number of output elements of every aten operation run inside it."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.elements += t.numel()
        return out


def _elements(block: torch.nn.Module, side: int) -> int:
    with torch.no_grad(), ElementCount() as count:
        block(torch.randn(1, 16, side, side))
    return count.elements


def test_work_grows_linearly_with_the_pixel_count():
    block = SSMBlock(16, scan_steps=4)
    small, medium, large = (_elements(block, s) for s in (32, 64, 128))
    assert 3.7 < medium / small < 4.1 and 3.8 < large / medium < 4.1  # 4x the pixels: 4x the work (not 16x)


def test_onnx_export_matches_pytorch_in_onnx_runtime(tmp_path, onnx_parity, one_thread):
    torch.manual_seed(0)
    block = SSMBlock(8, scan_steps=5)
    torch.nn.init.normal_(block.out_proj.weight, std=0.3)
    with torch.no_grad():
        block.decay_bias.add_(torch.randn_like(block.decay_bias))
    path = export_onnx(block.eval(), tmp_path / 'ssm.onnx', 8, fp32=True)
    for size in ((16, 16), (13, 41)):  # any size from one file; 41 > 2^5: the truncated window
        max_abs, psnr = onnx_parity(path, block, torch.rand(1, 8, *size))
        assert max_abs < 1e-4 and psnr > 80
