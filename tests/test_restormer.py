"""Restormer: the official constructor and state_dict layout, the parameter count of the official configuration,
an official-style options block through basicsr's registry and the pre-flight check, and ONNX Runtime parity."""

from __future__ import annotations

import pytest
import torch
from basicsr.archs import build_network

from qdr_plugin.archs.restormer_arch import Restormer
from qdr_plugin.basicsr_options import check_network
from qdr_plugin.deploy.onnx_export import export_onnx
from qdr_plugin.option_rules import OptionsError

TINY = {'inp_channels': 1, 'out_channels': 1, 'dim': 8, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1,
        'heads': [1, 2, 4, 8], 'ffn_expansion_factor': 2.66, 'bias': False, 'LayerNorm_type': 'WithBias'}

OFFICIAL_KEYS = [
    'patch_embed.proj.weight',
    'encoder_level1.0.norm1.body.weight', 'encoder_level1.0.norm1.body.bias', 'encoder_level1.0.attn.temperature',
    'encoder_level1.0.attn.qkv.weight', 'encoder_level1.0.attn.qkv_dwconv.weight',
    'encoder_level1.0.attn.project_out.weight', 'encoder_level1.0.norm2.body.weight',
    'encoder_level1.0.norm2.body.bias', 'encoder_level1.0.ffn.project_in.weight',
    'encoder_level1.0.ffn.dwconv.weight', 'encoder_level1.0.ffn.project_out.weight',
    'down1_2.body.0.weight', 'down2_3.body.0.weight', 'down3_4.body.0.weight', 'latent.7.attn.temperature',
    'up4_3.body.0.weight', 'reduce_chan_level3.weight', 'decoder_level3.5.ffn.dwconv.weight',
    'up3_2.body.0.weight', 'reduce_chan_level2.weight', 'decoder_level2.5.norm1.body.bias',
    'up2_1.body.0.weight', 'decoder_level1.3.attn.qkv.weight', 'refinement.3.ffn.project_out.weight',
    'output.weight',
]
"""Keys of the authors' Restormer state dict (official configuration, bias-free convolutions, WithBias norms)."""


def test_official_configuration_has_the_official_keys_shapes_and_parameter_count():
    net = Restormer()
    state = net.state_dict()
    assert set(OFFICIAL_KEYS) <= set(state)
    assert len(state) == 494
    assert not any(k.endswith('.bias') and '.norm' not in k for k in state)  # bias: false, as the official
    assert state['encoder_level1.0.attn.temperature'].shape == (1, 1, 1)
    assert state['latent.0.attn.temperature'].shape == (8, 1, 1)
    assert state['encoder_level1.0.attn.qkv_dwconv.weight'].shape == (144, 1, 3, 3)
    assert state['encoder_level1.0.ffn.project_in.weight'].shape == (254, 48, 1, 1)  # 2 * int(48 * 2.66)
    assert state['down1_2.body.0.weight'].shape == (24, 48, 3, 3)
    assert state['up2_1.body.0.weight'].shape == (192, 96, 3, 3)
    assert state['decoder_level1.0.norm1.body.weight'].shape == (96,)  # level-1 concat, no reduction
    assert state['output.weight'].shape == (3, 96, 3, 3)
    assert sum(p.numel() for p in net.parameters()) == 26_126_644  # the published 26.13 M


def test_a_state_dict_loads_strictly_into_a_fresh_network_and_gives_the_same_output():
    torch.manual_seed(0)
    a, b = Restormer(**TINY).eval(), Restormer(**TINY).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.rand(1, 1, 16, 24)
    torch.testing.assert_close(a(x), b(x))


def test_bias_free_norm_and_dual_pixel_layout():
    net = Restormer(inp_channels=6, out_channels=3, dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
                    LayerNorm_type='BiasFree', bias=True, dual_pixel_task=True)
    state = net.state_dict()
    assert 'encoder_level1.0.norm1.body.bias' not in state and 'skip_conv.weight' in state
    assert 'encoder_level1.0.attn.qkv.bias' in state
    assert net(torch.rand(1, 6, 16, 16)).shape == (1, 3, 16, 16)


def test_user_style_official_options_block_builds_through_the_registry_and_the_preflight_check():
    block = {'type': 'Restormer', 'inp_channels': 1, 'out_channels': 1, 'dim': 48, 'num_blocks': [4, 6, 6, 8],
             'num_refinement_blocks': 4, 'heads': [1, 2, 4, 8], 'ffn_expansion_factor': 2.66, 'bias': False,
             'LayerNorm_type': 'BiasFree', 'dual_pixel_task': False}
    filled = check_network({'network_g': block})
    assert filled['inp_channels'] == 1
    net = build_network(dict(block))
    assert isinstance(net, Restormer) and net.in_ch == 1


@pytest.mark.parametrize(('change', 'key'), [
    ({'heads': [1, 3, 4, 8]}, 'network_g.heads'),
    ({'dim': 7}, 'network_g.dim'),
    ({'num_blocks': [1, 1, 1]}, 'network_g.num_blocks'),
    ({'LayerNorm_type': 'withbias'}, 'network_g.LayerNorm_type'),
    ({'out_channels': 3}, 'network_g.out_channels'),
], ids=['heads', 'odd-dim', 'num_blocks', 'layernorm-type', 'out_channels'])
def test_bad_options_stop_with_one_line_naming_the_key(change, key):
    with pytest.raises(OptionsError) as info:
        check_network({'network_g': {'type': 'Restormer', **TINY, **change}})
    assert info.value.key_path == key and '\n' not in str(info.value)


def test_onnx_export_matches_pytorch_in_onnx_runtime_at_any_size(tmp_path, onnx_parity, one_thread):
    torch.manual_seed(0)
    net = Restormer(**TINY).eval()
    path = export_onnx(net, tmp_path / 'restormer.onnx', 1, fp32=True)
    for size in ((24, 24), (21, 30)):  # a multiple of 8, and one padded inside the graph
        max_abs, psnr = onnx_parity(path, net, torch.rand(1, 1, *size))
        assert max_abs < 1e-4 and psnr > 80
